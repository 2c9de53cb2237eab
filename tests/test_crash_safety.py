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


# The training entry point with the end-of-run prior fit slowed down and a SIGTERM arriving inside it.
SIGNAL_IN_END_STAGE = """
import os, signal, sys, time
from train import trainer as trainer_module
from train.train_custom_videos import main
original = trainer_module.TrainVqVae._fit_prior
def fit_prior_hit_by_a_signal(self):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.5)
    original(self)
trainer_module.TrainVqVae._fit_prior = fit_prior_hit_by_a_signal
sys.exit(main(["--config", sys.argv[1], "--device", "cpu"]))
"""


def test_a_signal_during_the_end_stage_still_ends_with_the_final_checkpoint_and_summary(tmp_path):
    data = tiny_config(tmp_path, train_args={"num_steps": 4, "save_interval": 100, "validation_interval": 1000,
                                             "fit_prior": True})
    config_path = write_config(tmp_path, data, "ending.json")
    run_dir = os.path.join(data["train_args"]["folder_name"], "ending")
    proc = subprocess.run([sys.executable, "-c", SIGNAL_IN_END_STAGE, config_path], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr  # every step was trained
    summary = json.load(open(os.path.join(run_dir, "run_summary.json")))
    assert summary["status"] == "finished" and summary["steps"] == 4
    final = load_checkpoint(summary["last_checkpoint"])
    assert final["steps"] == 4 and "code_prior" in final
