"""Run jobs as child processes on a fixed set of slots, a queue for the rest.

The pool knows nothing about training: a job is a name, a function giving its
argument list for a slot, and a log file. A slot is a place to run (a GPU, a CPU
share) with the environment a job gets there (``CUDA_VISIBLE_DEVICES``). A failed
job is queued again until it has used its retries; it never stops the others.

Ctrl-C (SIGINT) or SIGTERM to the pool: no new job starts, each running child is
sent SIGINT once (the trainer saves a checkpoint and exits), and children still
alive after the grace period are terminated. Children run in their own process
group so the terminal's Ctrl-C reaches them only through the pool, exactly once.
"""
import collections
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from typing import Callable, Optional

import attrs

log = logging.getLogger(__name__)

TERMINATE_WAIT_S = 10.0  # after SIGTERM, before SIGKILL


@attrs.frozen
class Slot:
    """One place to run: its name in the summary, the device a job is told, its environment."""

    label: str  # "cuda:1", "cpu"
    device: str  # the --device a job gets: "cuda:0" is the one GPU it sees
    env: dict = attrs.field(factory=dict)  # merged into the job's environment


@attrs.frozen
class Job:
    name: str  # unique among the jobs of one run
    command: Callable[[Slot], list]  # the argument list on a slot; never a shell string
    log_path: str  # stdout and stderr of every attempt


@attrs.define
class Outcome:
    name: str
    log_path: str
    status: str = "cancelled"  # succeeded | failed | interrupted | cancelled (never started)
    device: str = ""  # slot label of the last attempt
    exit_code: Optional[int] = None  # of the last attempt; negative: killed by that signal
    attempts: int = 0
    duration_s: float = 0.0  # all attempts together
    started_at: Optional[float] = None  # wall-clock time of the first attempt


@attrs.define
class _Running:
    job: Job
    slot_index: int
    process: subprocess.Popen
    started: float


def run_jobs(jobs: list, slots: list, retries: int = 0, grace_s: float = 60.0, poll_s: float = 0.05) -> list:
    """Run ``jobs`` with at most one per slot at a time; one ``Outcome`` per job, in order.

    A slot listed twice takes two jobs at once. A job that exits non-zero (or cannot
    start) runs again, up to ``retries`` more times.
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique: {names}")
    if not slots:
        raise ValueError("no slots to run jobs on")
    pool = _Pool(slots=list(slots), retries=retries, grace_s=grace_s, poll_s=poll_s)
    return pool.run(jobs)


@attrs.define
class _Pool:
    slots: list
    retries: int
    grace_s: float
    poll_s: float
    free: list = attrs.Factory(list)  # indices into slots
    queue: collections.deque = attrs.Factory(collections.deque)
    running: list = attrs.Factory(list)
    outcomes: dict = attrs.Factory(dict)
    stop_requests: int = 0  # signals received; the second one cuts the grace short

    def run(self, jobs: list) -> list:
        self.free = list(range(len(self.slots)))
        self.queue.extend(jobs)
        self.outcomes = {job.name: Outcome(job.name, job.log_path) for job in jobs}
        with _signals_call(self._request_stop):
            while (self.queue or self.running) and not self.stop_requests:
                while self.queue and self.free and not self.stop_requests:
                    self._start(self.queue.popleft(), self.free.pop(0))
                self._collect()
                time.sleep(self.poll_s)
            if self.stop_requests:
                self._shut_down()
        return [self.outcomes[job.name] for job in jobs]

    def _request_stop(self, signum, _frame):
        self.stop_requests += 1
        log.warning("received %s: stopping", signal.Signals(signum).name)

    def _start(self, job: Job, slot_index: int) -> None:
        slot = self.slots[slot_index]
        outcome = self.outcomes[job.name]
        outcome.attempts += 1
        outcome.device = slot.label
        if outcome.started_at is None:
            outcome.started_at = time.time()
        command = job.command(slot)
        parent = os.path.dirname(job.log_path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        shown = " ".join([f"{k}={v}" for k, v in slot.env.items()] + [shlex.join(command)])
        with open(job.log_path, "w" if outcome.attempts == 1 else "a", encoding="utf-8") as log_file:
            log_file.write(f"# attempt {outcome.attempts} of {self.retries + 1} on {slot.label}: {shown}\n")
            log_file.flush()
            started = time.monotonic()
            try:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **slot.env},
                    process_group=0,  # out of the terminal's foreground group
                )
            except OSError as err:  # e.g. no such program: a failed attempt like any other
                log_file.write(f"# cannot start: {err}\n")
                process = None
        if process is None:
            self.free.append(slot_index)
            self._settle(job, exit_code=None, seconds=0.0)
            return
        log.info("%s: started on %s (attempt %d of %d)", job.name, slot.label, outcome.attempts, self.retries + 1)
        self.running.append(_Running(job, slot_index, process, started))

    def _collect(self) -> None:
        """Settle every child that has exited."""
        for run in list(self.running):
            exit_code = run.process.poll()
            if exit_code is None:
                continue
            self.running.remove(run)
            self.free.append(run.slot_index)
            self._settle(run.job, exit_code, time.monotonic() - run.started)

    def _settle(self, job: Job, exit_code: Optional[int], seconds: float) -> None:
        outcome = self.outcomes[job.name]
        outcome.exit_code = exit_code
        outcome.duration_s += seconds
        with open(job.log_path, "a", encoding="utf-8") as log_file:
            log_file.write(f"# exit code {exit_code} after {seconds:.1f} s\n")
        if self.stop_requests:
            outcome.status = "interrupted"
            log.warning("%s: interrupted (exit code %s)", job.name, exit_code)
        elif exit_code == 0:
            outcome.status = "succeeded"
            log.info("%s: succeeded in %.1f s", job.name, seconds)
        else:
            outcome.status = "failed"
            retry = outcome.attempts <= self.retries
            log.warning("%s: failed (exit code %s, log %s)%s", job.name, exit_code, job.log_path,
                        ", queued again" if retry else "")
            if retry:
                self.queue.append(job)

    def _shut_down(self) -> None:
        if self.running:
            log.warning("asking %d running task(s) to save and stop (SIGINT); %.0f s before they are terminated",
                        len(self.running), self.grace_s)
        for run in self.running:
            run.process.send_signal(signal.SIGINT)
        self._wait(time.monotonic() + self.grace_s, until_requests=2)
        for run in self.running:
            log.warning("%s: still running, terminating it", run.job.name)
            run.process.terminate()
        self._wait(time.monotonic() + TERMINATE_WAIT_S)
        for run in self.running:
            run.process.kill()
        self._wait(float("inf"))

    def _wait(self, deadline: float, until_requests: Optional[int] = None) -> None:
        """Collect children until none runs, ``deadline`` passes, or (optionally) another Ctrl-C."""
        while self.running and time.monotonic() < deadline:
            if until_requests is not None and self.stop_requests >= until_requests:
                return
            self._collect()
            time.sleep(self.poll_s)
        self._collect()


@contextlib.contextmanager
def _signals_call(handler):
    """SIGINT and SIGTERM call ``handler`` instead of raising, for the duration of the block.

    Signal handlers can only be set from the main thread; elsewhere the defaults stay.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
