"""Kill the trainer at random moments: it resumes, and never leaves a corrupt checkpoint."""
import json
import os
import random
import signal
import subprocess
import sys
import time

from tests.helpers import tiny_config, write_config
from core import exit_codes
from core.checkpoint import list_checkpoints, load_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_training(config_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "train/train_custom_videos.py", "--config", config_path,
                             "--device", "cpu"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_step(run_dir, proc, timeout=60):
    """Wait until the run has written its first checkpoint (or the process ended)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if list_checkpoints(os.path.join(run_dir, "checkpoints")):
            return True
        time.sleep(0.1)
    return False


def test_sigkill_at_random_moments_then_resume_reaches_the_end(tmp_path):
    data = tiny_config(tmp_path, train_args={"num_steps": 40, "save_interval": 2, "keep_last": 2,
                                             "resume": "auto", "validation_interval": 1000})
    config_path = write_config(tmp_path, data, "killme.json")
    run_dir = os.path.join(data["train_args"]["folder_name"], "killme")
    rng = random.Random(7)
    kills = 0
    for _ in range(3):
        proc = start_training(config_path)
        wait_for_step(run_dir, proc)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        for path in list_checkpoints(os.path.join(run_dir, "checkpoints")):
            load_checkpoint(path)  # every file on disk loads
    assert kills >= 2
    proc = start_training(config_path)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output
    summary = json.load(open(os.path.join(run_dir, "run_summary.json")))
    assert summary["status"] == "finished" and summary["steps"] == 40
    assert "resumed from" in output
    assert load_checkpoint(summary["last_checkpoint"])["steps"] == 40
    assert not [n for n in os.listdir(os.path.join(run_dir, "checkpoints")) if n.startswith(".tmp")]


def test_sigterm_saves_a_checkpoint_and_exits_with_the_interrupted_code(tmp_path):
    data = tiny_config(tmp_path, train_args={"num_steps": 100000, "save_interval": 5, "validation_interval": 1000})
    config_path = write_config(tmp_path, data, "term.json")
    run_dir = os.path.join(data["train_args"]["folder_name"], "term")
    proc = start_training(config_path)
    assert wait_for_step(run_dir, proc)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == exit_codes.INTERRUPTED == 75, output  # not 0: the run did not finish
    summary = json.load(open(os.path.join(run_dir, "run_summary.json")))
    assert summary["status"] == "interrupted"
    assert load_checkpoint(summary["last_checkpoint"])["steps"] == summary["steps"]
    assert "SIGTERM received" in output
