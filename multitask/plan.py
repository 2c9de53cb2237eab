"""A multitask run: the task files of a folder, checked, on the slots ``config.json`` allots.

``make_plan`` reads and validates everything before anything starts -- every task's
config, its data paths and its run folder -- so the launcher can show the plan (and
``--dry-run`` stop there); ``run_plan`` trains every valid task in its own process and
writes ``summary.json`` beside the task logs. A retry resumes from the task's newest good
checkpoint; with ``resume`` every attempt does (continuing a stopped batch).
"""
import collections
import functools
import os
import sys
from typing import Callable, Optional

import attrs

from multitask.devices import make_slots
from multitask.scheduler import Job, Outcome, Slot, run_jobs
from multitask.settings import MultitaskConfig, load_multitask_config, task_files
from multitask.summary import summary_row, write_summary
from core.config_schema import ConfigError
from core.run_folder import check_run_dir
from data_utils.files import config_data_files
from models.builders import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_SCRIPT = os.path.join(ROOT, "train", "train_custom_videos.py")
SUMMARY_NAME = "summary.json"


@attrs.frozen
class Task:
    path: str
    run_dir: Optional[str] = None  # where its trainer writes run_summary.json
    error: Optional[str] = None  # why its config was rejected; such a task is not run

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]


@attrs.frozen
class Plan:
    folder: str
    config: MultitaskConfig
    tasks: list
    slots: list
    resume: bool = False  # every attempt continues from the task's newest good checkpoint

    @property
    def runnable(self) -> list:
        return [task for task in self.tasks if task.error is None]

    @property
    def summary_path(self) -> str:
        return os.path.join(self.config.log_dir, SUMMARY_NAME)

    def describe(self) -> str:
        counts = collections.Counter(slot.label for slot in self.slots)
        pool = ", ".join(f"{label} x{n}" for label, n in counts.items())
        lines = [
            f"{len(self.tasks)} task(s) from {self.folder} on {len(self.slots)} slot(s) ({pool}); "
            f"retries {self.config.retries}; logs in {self.config.log_dir}"
            + (f"; task_timeout {self.config.task_timeout:g} s" if self.config.task_timeout else "")
            + ("; resuming every task" if self.resume else "")
        ]
        name_width = max(len(task.name) for task in self.tasks)
        path_width = max(len(task.path) for task in self.tasks)
        for task in self.tasks:
            where = f"-> {task.run_dir}" if task.error is None else f"NOT RUN: {task.error}"
            lines.append(f"  {task.name.ljust(name_width)}  {task.path.ljust(path_width)}  {where}")
        return "\n".join(lines)


def make_plan(folder: str, resume: bool = False) -> Plan:
    """Read ``folder/config.json`` and check every task it selects; ``ConfigError`` if the former is bad."""
    if not os.path.isdir(folder):
        raise ConfigError(f"{folder}: no such task folder")
    config = load_multitask_config(folder)
    tasks = [check_task(path, resume) for path in task_files(folder, config)]
    return Plan(folder, config, tasks, make_slots(config), resume)


def check_task(path: str, resume: bool = False) -> Task:
    """A task file, checked as the trainer will check it: config, data paths, run folder."""
    try:
        config = load_config(path)
        config_data_files(config)
        if not resume:
            check_run_dir(config)
        return Task(path, run_dir=config.run_dir)
    except ConfigError as err:
        return Task(path, error=str(err))


def training_command(task: Task, slot: Slot, resume: bool = False) -> list:
    command = [sys.executable, TRAIN_SCRIPT, "--config", task.path, "--device", slot.device]
    return command + ["--resume"] if resume else command


def run_plan(plan: Plan, command: Callable[[Task, Slot], list] = training_command) -> list:
    """Run every valid task of ``plan``; the summary rows (also written to ``plan.summary_path``)."""
    jobs = [
        Job(task.name, functools.partial(command, task, resume=plan.resume),
            os.path.join(plan.config.log_dir, f"{task.name}.log"),
            retry_command=functools.partial(command, task, resume=True))  # a retry continues where it stopped
        for task in plan.runnable
    ]
    outcomes = run_jobs(jobs, plan.slots, retries=plan.config.retries, grace_s=plan.config.grace_seconds,
                        timeout_s=plan.config.task_timeout)
    by_name = {outcome.name: outcome for outcome in outcomes}
    rows = []
    for task in plan.tasks:
        if task.error is None:
            rows.append(summary_row(by_name[task.name], task.run_dir))
        else:
            rows.append(summary_row(Outcome(task.name, log_path="", status="invalid"), error=task.error))
    write_summary(plan.summary_path, rows)
    return rows
