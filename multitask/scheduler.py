"""Run jobs as child processes on a fixed set of slots, a queue for the rest.

The pool knows nothing about training: a job is a name, a function giving its
argument list for a slot, and a log file. A slot is a place to run (a GPU, a CPU
share) with the environment a job gets there (``CUDA_VISIBLE_DEVICES``). A failed
job is queued again (with its ``retry_command``, e.g. one that resumes) until it has
used its retries, unless its exit code says a retry cannot help (``core.exit_codes``:
bad input, unwritable storage, interrupted); it never stops the others. A job running
longer than ``timeout_s`` is asked to save and stop (SIGINT), and terminated after the
grace period. Every outcome carries a one-line reason.

Ctrl-C (SIGINT) or SIGTERM to the pool: no new job starts, each running child is
sent SIGINT once (the trainer saves a checkpoint and exits), and children still
alive after the grace period are terminated. Children run in their own process
group so the terminal's Ctrl-C reaches them only through the pool, exactly once.
"""
import collections
import contextlib
import logging
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from typing import Callable, Optional

import attrs

from core import exit_codes

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
    retry_command: Optional[Callable[[Slot], list]] = None  # for attempts after the first (default: command)


@attrs.define
class Outcome:
    name: str
    log_path: str
    status: str = "cancelled"  # succeeded | failed | interrupted | timed_out | cancelled (never started)
    device: str = ""  # slot label of the last attempt
    exit_code: Optional[int] = None  # of the last attempt; negative: killed by that signal
    attempts: int = 0
    duration_s: float = 0.0  # all attempts together
    started_at: Optional[float] = None  # wall-clock time of the first attempt
    reason: str = ""  # one line: why it ended as it did (empty when it succeeded)


@attrs.define
class _Running:
    job: Job
    slot_index: int
    process: subprocess.Popen
    started: float
    stop_sent: Optional[float] = None  # when it was asked to save and stop for its time limit
    terminated_at: Optional[float] = None


def run_jobs(jobs: list, slots: list, retries: int = 0, grace_s: float = 60.0, poll_s: float = 0.05,
             timeout_s: Optional[float] = None) -> list:
    """Run ``jobs`` with at most one per slot at a time; one ``Outcome`` per job, in order.

    A slot listed twice takes two jobs at once. A job that exits non-zero (or cannot
    start) runs again, up to ``retries`` more times, unless its exit code is one of
    ``exit_codes.NOT_RETRIED``. ``timeout_s``: per attempt, then SIGINT, ``grace_s``, SIGTERM.
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique: {names}")
    if not slots:
        raise ValueError("no slots to run jobs on")
    pool = _Pool(slots=list(slots), retries=retries, grace_s=grace_s, poll_s=poll_s, timeout_s=timeout_s)
    return pool.run(jobs)


@attrs.define
class _Pool:
    slots: list
    retries: int
    grace_s: float
    poll_s: float
    timeout_s: Optional[float] = None
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
                self._enforce_time_limit()
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
        command = (job.retry_command or job.command)(slot) if outcome.attempts > 1 else job.command(slot)
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
                process, reason = None, f"cannot start: {err}"
        if process is None:
            self.free.append(slot_index)
            self._settle(job, exit_code=None, seconds=0.0, reason=reason)
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
            self._settle(run.job, exit_code, time.monotonic() - run.started, timed_out=run.stop_sent is not None)

    def _enforce_time_limit(self) -> None:
        """Past ``timeout_s``: ask to save and stop (SIGINT); past the grace period too: SIGTERM, then SIGKILL."""
        if self.timeout_s is None:
            return
        now = time.monotonic()
        for run in self.running:
            if run.stop_sent is None:
                if now - run.started > self.timeout_s:
                    log.warning("%s: task_timeout of %g s reached: asking it to save and stop", run.job.name,
                                self.timeout_s)
                    run.process.send_signal(signal.SIGINT)
                    run.stop_sent = now
            elif run.terminated_at is None and now - run.stop_sent > self.grace_s:
                log.warning("%s: still running %g s after its time limit, terminating it", run.job.name, self.grace_s)
                run.process.terminate()
                run.terminated_at = now
            elif run.terminated_at is not None and now - run.terminated_at > TERMINATE_WAIT_S:
                run.process.kill()

    def _settle(self, job: Job, exit_code: Optional[int], seconds: float, timed_out: bool = False,
                reason: str = "") -> None:
        outcome = self.outcomes[job.name]
        outcome.exit_code = exit_code
        outcome.duration_s += seconds
        with open(job.log_path, "a", encoding="utf-8") as log_file:
            log_file.write(f"# exit code {exit_code} after {seconds:.1f} s\n")
        outcome.reason = "" if exit_code == 0 else reason or exit_reason(exit_code, job.log_path)
        if exit_code == 0:
            outcome.status = "succeeded"
            log.info("%s: succeeded in %.1f s", job.name, seconds)
        elif timed_out:
            outcome.status = "timed_out"
            outcome.reason = f"task_timeout ({self.timeout_s:g} s) reached; {outcome.reason}"
            log.warning("%s: stopped at its time limit (exit code %s)", job.name, exit_code)
        elif self.stop_requests or exit_code == exit_codes.INTERRUPTED:
            outcome.status = "interrupted"
            log.warning("%s: interrupted (exit code %s)", job.name, exit_code)
        else:
            outcome.status = "failed"
            retry = outcome.attempts <= self.retries and exit_code not in exit_codes.NOT_RETRIED
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


LOG_PREFIX = re.compile(r"^.*? - (?:ERROR|CRITICAL) - |^(?:ERROR|CRITICAL):[\w.]*:")
REASON_MAX = 200


def exit_reason(exit_code: Optional[int], log_path: str) -> str:
    """One line for an exit code: a signal's name, the meaning of an ``exit_codes`` code, or the log's last line."""
    if exit_code is not None and exit_code < 0:
        return f"killed by {signal.Signals(-exit_code).name}"
    if exit_code == exit_codes.INTERRUPTED:
        return "stopped with a checkpoint saved: resume to continue"
    line = last_line(log_path)
    return line or f"exit code {exit_code}"


def last_line(log_path: str) -> str:
    """The last line a job printed (its error, or a traceback's last line), without the logging prefix."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 8192))
            lines = fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    lines = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    text = LOG_PREFIX.sub("", lines[-1]) if lines else ""
    return text if len(text) <= REASON_MAX else text[:REASON_MAX - 3] + "..."


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
