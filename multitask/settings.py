"""``multitask/config.json``: which GPUs, how many tasks on each, which task files.

Validated like every config: a wrong value is one ``ConfigError`` line naming the
file and the key. A folder without ``config.json`` runs every task with the defaults.
"""
import glob
import json
import os
from typing import Literal, Optional, Union

import attrs

from core.config_schema import ConfigError, Invalid, non_negative, positive, require, structure

CONFIG_NAME = "config.json"


@attrs.frozen
class MultitaskConfig:
    # GPU ids handed to tasks as CUDA_VISIBLE_DEVICES; "auto": every GPU this process sees;
    # []: run on the CPU even when GPUs are present.
    gpus: Union[Literal["auto"], list[int]] = "auto"
    tasks_per_gpu: int = attrs.field(default=1, validator=positive)
    cpu_concurrency: int = attrs.field(default=1, validator=positive)  # tasks at once without a GPU
    # Task files in the folder: a glob or a list of names/globs; config.json is never a task.
    tasks: Union[str, list[str]] = "*.json"
    retries: int = attrs.field(default=1, validator=non_negative)  # extra attempts after a failure
    log_dir: str = "runs/multitask"  # one log per task, and summary.json
    # After Ctrl-C (or task_timeout), how long tasks get to save a checkpoint before they are terminated.
    grace_seconds: float = attrs.field(default=60.0, validator=non_negative)
    # Seconds a task may train (per attempt) before it is asked to save and stop; null: no limit.
    task_timeout: Optional[float] = attrs.field(default=None, validator=positive)

    def __attrs_post_init__(self):
        if isinstance(self.gpus, list):
            require(all(g >= 0 for g in self.gpus), f"gpus = {self.gpus!r}: expected GPU ids >= 0")
            require(len(set(self.gpus)) == len(self.gpus), f"gpus = {self.gpus!r}: expected each GPU once")
        if isinstance(self.tasks, list):
            require(bool(self.tasks), "tasks = []: expected a glob or a non-empty list of file names")


def load_multitask_config(folder: str) -> MultitaskConfig:
    """The validated ``config.json`` of ``folder`` (defaults when the file is absent)."""
    path = os.path.join(folder, CONFIG_NAME)
    if not os.path.exists(path):
        return MultitaskConfig()
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config ({err})") from None
    try:
        return structure(MultitaskConfig, data, "")
    except (ConfigError, Invalid) as err:
        raise ConfigError(f"{path}: {err}") from None


def task_files(folder: str, config: MultitaskConfig) -> list:
    """The task JSON files ``config.tasks`` selects in ``folder``, sorted, each once."""
    patterns = [config.tasks] if isinstance(config.tasks, str) else config.tasks
    where = os.path.join(folder, CONFIG_NAME)
    found = []
    for i, pattern in enumerate(patterns):
        key = "tasks" if isinstance(config.tasks, str) else f"tasks[{i}]"
        matches = sorted(p for p in glob.glob(os.path.join(folder, pattern)) if os.path.isfile(p))
        matches = [p for p in matches if os.path.basename(p) != CONFIG_NAME]
        if not matches:
            raise ConfigError(f"{where}: {key} = {pattern!r}: expected task files, none found in {folder}")
        found += [p for p in matches if p not in found]
    return found
