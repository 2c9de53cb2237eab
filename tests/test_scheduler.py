"""The multitask process pool, driven with tiny Python commands instead of trainings."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from multitask.devices import make_slots
from multitask.scheduler import Job, Outcome, Slot, run_jobs
from multitask.settings import MultitaskConfig
from multitask.summary import format_table, summary_row, write_summary

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Sleeps, then appends what it saw (times, CUDA_VISIBLE_DEVICES, --device) to a JSON-lines file.
RECORDER = textwrap.dedent("""
    import json, os, sys, time
    record, seconds, code, device = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    start = time.time()
    time.sleep(seconds)
    seen = {"start": start, "end": time.time(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": device}
    with open(record, "a") as fh:
        fh.write(json.dumps(seen) + "\\n")
    print("recorded", flush=True)
    sys.exit(code)
""")


def recorder_job(tmp_path, name, seconds=0.4, exit_code=0):
    record = tmp_path / f"{name}.jsonl"
    return Job(
        name,
        lambda slot: [sys.executable, "-c", RECORDER, str(record), str(seconds), str(exit_code), slot.device],
        str(tmp_path / "logs" / f"{name}.log"),
    )


def records(tmp_path, name):
    path = tmp_path / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def most_at_once(intervals):
    """The largest number of (start, end) intervals that overlap at one moment."""
    return max(sum(start <= t < end for start, end in intervals) for t, _ in intervals)


def test_three_jobs_on_two_gpus_run_two_at_a_time_each_on_its_own_gpu(tmp_path):
    slots = make_slots(MultitaskConfig(gpus=[0, 1], tasks_per_gpu=1))
    jobs = [recorder_job(tmp_path, name) for name in ("a", "b", "c")]

    outcomes = run_jobs(jobs, slots, poll_s=0.01)

    assert [o.status for o in outcomes] == ["succeeded"] * 3
    seen = {o.name: records(tmp_path, o.name) for o in outcomes}
    assert all(len(lines) == 1 for lines in seen.values())
    intervals = [(lines[0]["start"], lines[0]["end"]) for lines in seen.values()]
    assert most_at_once(intervals) == 2  # observed: two overlapped, never three
    for outcome in outcomes:
        (line,) = seen[outcome.name]
        assert outcome.device == f"cuda:{line['visible']}"  # it saw the GPU it was given ...
        assert line["device"] == "cuda:0"  # ... as its only device
    assert {line[0]["visible"] for line in seen.values()} == {"0", "1"}
    assert "recorded" in (tmp_path / "logs" / "a.log").read_text()


def test_failing_job_is_retried_the_configured_times_and_never_stops_the_others(tmp_path):
    jobs = [recorder_job(tmp_path, "good1", 0.1), recorder_job(tmp_path, "broken", 0.1, exit_code=3),
            recorder_job(tmp_path, "good2", 0.1)]

    outcomes = run_jobs(jobs, [Slot("cpu", "cpu")], retries=2, poll_s=0.01)

    by_name = {o.name: o for o in outcomes}
    assert by_name["broken"].status == "failed"
    assert by_name["broken"].exit_code == 3
    assert by_name["broken"].attempts == 3
    assert len(records(tmp_path, "broken")) == 3
    for name in ("good1", "good2"):
        assert (by_name[name].status, by_name[name].attempts, by_name[name].exit_code) == ("succeeded", 1, 0)
        assert len(records(tmp_path, name)) == 1
    log_text = (tmp_path / "logs" / "broken.log").read_text()
    assert "attempt 3 of 3" in log_text and log_text.splitlines().count("recorded") == 3


def test_command_that_cannot_start_is_a_failed_attempt(tmp_path):
    missing = Job("missing", lambda slot: [str(tmp_path / "no-such-program")], str(tmp_path / "missing.log"))
    outcomes = run_jobs([missing, recorder_job(tmp_path, "fine", 0.1)], [Slot("cpu", "cpu")], retries=1, poll_s=0.01)

    assert [(o.status, o.attempts) for o in outcomes] == [("failed", 2), ("succeeded", 1)]
    assert outcomes[0].exit_code is None
    assert "cannot start" in (tmp_path / "missing.log").read_text()


def test_without_gpus_tasks_run_on_cpu_slots_that_hide_the_gpus(tmp_path):
    slots = make_slots(MultitaskConfig(gpus=[], cpu_concurrency=2))
    assert [slot.label for slot in slots] == ["cpu", "cpu"]

    (outcome,) = run_jobs([recorder_job(tmp_path, "only", 0.1)], slots, poll_s=0.01)

    (line,) = records(tmp_path, "only")
    assert (outcome.device, line["visible"], line["device"]) == ("cpu", "", "cpu")


def test_gpu_slots_are_interleaved_so_first_tasks_spread_over_gpus():
    slots = make_slots(MultitaskConfig(gpus=[2, 5], tasks_per_gpu=2))
    assert [slot.label for slot in slots] == ["cuda:2", "cuda:5", "cuda:2", "cuda:5"]
    assert [slot.env["CUDA_VISIBLE_DEVICES"] for slot in slots] == ["2", "5", "2", "5"]


def test_duplicate_job_names_are_refused(tmp_path):
    job = recorder_job(tmp_path, "same")
    with pytest.raises(ValueError, match="unique"):
        run_jobs([job, job], [Slot("cpu", "cpu")])


def test_summary_rows_match_what_ran_and_read_the_run_summary(tmp_path):
    run_dir = tmp_path / "runs" / "fine"
    writes_summary = textwrap.dedent(f"""
        import json, os
        os.makedirs({str(run_dir)!r}, exist_ok=True)
        summary = {{"status": "finished", "steps": 5, "last_checkpoint": "ckpt_5.pt", "best": {{"val/stats/psnr": 21.237}}}}
        json.dump(summary, open(os.path.join({str(run_dir)!r}, "run_summary.json"), "w"))
    """)
    fine = Job("fine", lambda slot: [sys.executable, "-c", writes_summary], str(tmp_path / "fine.log"))
    broken = Job("broken", lambda slot: [sys.executable, "-c", "raise SystemExit(2)"], str(tmp_path / "broken.log"))

    outcomes = run_jobs([fine, broken], [Slot("cpu", "cpu")], poll_s=0.01)
    rows = [summary_row(outcomes[0], str(run_dir)), summary_row(outcomes[1], str(tmp_path / "runs" / "broken"))]
    write_summary(str(tmp_path / "summary.json"), rows)

    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["interrupted"] is False
    assert saved["tasks"] == rows
    assert rows[0] | {"duration_s": None} == {
        "task": "fine", "device": "cpu", "status": "succeeded", "exit_code": 0, "attempts": 1,
        "duration_s": None, "best_val_psnr": 21.24, "last_checkpoint": "ckpt_5.pt",
        "log": str(tmp_path / "fine.log"), "error": None, "reason": "",
    }
    assert (rows[1]["status"], rows[1]["exit_code"], rows[1]["best_val_psnr"]) == ("failed", 2, None)
    table = format_table(rows).splitlines()
    assert table[0].split() == ["task", "device", "status", "exit", "attempts", "duration", "s", "best",
                                "val", "PSNR", "last", "checkpoint", "reason"]
    assert table[2].split()[:5] == ["fine", "cpu", "succeeded", "0", "1"]
    assert table[2].split()[-2:] == ["21.24", "ckpt_5.pt"]
    assert table[3].split()[:5] == ["broken", "cpu", "failed", "2", "1"]


def test_a_run_summary_older_than_the_task_is_ignored(tmp_path):
    (tmp_path / "run_summary.json").write_text(json.dumps({"last_checkpoint": "old.pt", "best": {}}))
    outcome = Outcome("task", "task.log", status="failed", started_at=time.time() + 60)
    assert summary_row(outcome, str(tmp_path))["last_checkpoint"] is None


# The pool in its own process, so a real SIGINT can be sent to it.
POOL_SCRIPT = textwrap.dedent("""
    import sys
    from multitask.scheduler import Job, Slot, run_jobs
    from multitask.summary import summary_row, write_summary
    child, folder, grace = sys.argv[1], sys.argv[2], float(sys.argv[3])
    command = lambda slot: [sys.executable, "-c", child, folder]
    jobs = [Job("sleeper", command, folder + "/sleeper.log"), Job("queued", command, folder + "/queued.log")]
    outcomes = run_jobs(jobs, [Slot("cpu", "cpu")], grace_s=grace, poll_s=0.01)
    write_summary(folder + "/summary.json", [summary_row(o) for o in outcomes])
""")

# Says it is ready, then sleeps; on SIGINT it notes it (the trainer would save a checkpoint).
SLEEPER = textwrap.dedent("""
    import signal, sys, time
    folder = sys.argv[1]
    def on_sigint(signum, frame):
        with open(folder + "/got_sigint", "a") as fh:
            fh.write("SIGINT\\n")
        if {exit_on_sigint}:
            sys.exit(130)
    signal.signal(signal.SIGINT, on_sigint)
    open(folder + "/ready", "w").close()
    for _ in range(600):
        time.sleep(0.05)
""")


@pytest.mark.parametrize("child_exits", [True, False], ids=["child-saves-and-exits", "child-ignores-sigint"])
def test_sigint_is_forwarded_once_then_stragglers_are_terminated(tmp_path, child_exits):
    child = SLEEPER.format(exit_on_sigint=child_exits)
    env = {**os.environ, "PYTHONPATH": ROOT}
    # In its own process group, as a launcher in a terminal is; Ctrl-C there signals the whole group.
    pool = subprocess.Popen([sys.executable, "-c", POOL_SCRIPT, child, str(tmp_path), "0.5"], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True, process_group=0)
    try:
        deadline = time.monotonic() + 15
        while not (tmp_path / "ready").exists():
            assert pool.poll() is None and time.monotonic() < deadline, "the child never started"
            time.sleep(0.02)
        os.killpg(pool.pid, signal.SIGINT)
        _, stderr = pool.communicate(timeout=20)
    finally:
        if pool.poll() is None:
            pool.kill()

    assert pool.returncode == 0, stderr
    assert (tmp_path / "got_sigint").read_text() == "SIGINT\n"  # reached the child once, through the pool
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] is True
    sleeper, queued = summary["tasks"]
    assert sleeper["status"] == "interrupted"
    assert sleeper["exit_code"] == (130 if child_exits else -signal.SIGTERM)
    assert (queued["status"], queued["attempts"]) == ("cancelled", 0)
    assert "SIGINT" in stderr


# -- exit codes, retries that resume, time limits, reasons --------------------------------------------

def exiting_job(tmp_path, name, code, message="", retry_code=None):
    """Prints ``message`` (as the trainer logs its one-line error) and exits with ``code``; a retry, ``retry_code``."""
    script = "import sys; print(sys.argv[1], flush=True); sys.exit(int(sys.argv[2]))"
    log_path = str(tmp_path / f"{name}.log")
    retry = None if retry_code is None else (lambda slot: [sys.executable, "-c", script, "resumed", str(retry_code)])
    return Job(name, lambda slot: [sys.executable, "-c", script, message, str(code)], log_path, retry_command=retry)


def test_exit_code_75_is_interrupted_and_2_is_not_retried_and_both_say_why(tmp_path):
    jobs = [exiting_job(tmp_path, "stopped", 75, "SIGTERM received: saved"),
            exiting_job(tmp_path, "bad", 2, "2025-01-01 00:00:00,000 - vqvc - ERROR - cfg.json: model_args.x = 1: "
                                              "expected 2"),
            exiting_job(tmp_path, "crashed", 1, "RuntimeError: boom", retry_code=0)]
    outcomes = {o.name: o for o in run_jobs(jobs, [Slot("cpu", "cpu")], retries=2, poll_s=0.01)}
    assert (outcomes["stopped"].status, outcomes["stopped"].attempts) == ("interrupted", 1)
    assert "checkpoint saved" in outcomes["stopped"].reason
    assert (outcomes["bad"].status, outcomes["bad"].attempts) == ("failed", 1)
    assert outcomes["bad"].reason == "cfg.json: model_args.x = 1: expected 2"
    # a retry runs the retry command (the trainer's: resume from the newest good checkpoint)
    assert (outcomes["crashed"].status, outcomes["crashed"].attempts) == ("succeeded", 2)
    assert "resumed" in (tmp_path / "crashed.log").read_text()


def test_a_task_past_its_time_limit_is_asked_to_save_and_stop(tmp_path):
    saves_on_sigint = textwrap.dedent("""
        import signal, sys, time
        signal.signal(signal.SIGINT, lambda *a: (print("saved", flush=True), sys.exit(75)))
        time.sleep(60)
    """)
    job = Job("slow", lambda slot: [sys.executable, "-c", saves_on_sigint], str(tmp_path / "slow.log"))
    (outcome,) = run_jobs([job], [Slot("cpu", "cpu")], retries=1, poll_s=0.01, timeout_s=1.0, grace_s=30)
    assert (outcome.status, outcome.exit_code, outcome.attempts) == ("timed_out", 75, 1)
    assert "task_timeout (1 s)" in outcome.reason and "saved" in (tmp_path / "slow.log").read_text()
    assert outcome.duration_s < 30


def test_a_task_killed_by_a_signal_says_which(tmp_path):
    job = Job("killed", lambda slot: [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
              str(tmp_path / "killed.log"))
    (outcome,) = run_jobs([job], [Slot("cpu", "cpu")], poll_s=0.01)
    assert outcome.reason == "killed by SIGKILL"
