"""main.py: the menu through standard input, the flags, and multitask plans (nothing trains here)."""
import io
import json
import os
import subprocess
import sys

import pytest

import main
from multitask import plan as plan_module
from multitask.plan import make_plan, run_plan
from multitask.settings import MultitaskConfig, task_files
from core.config_schema import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "multitask")
EXAMPLE_TASKS = ("vqvae2_k64.json", "vqvae2_k512.json")


def feed(monkeypatch, text):
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


@pytest.fixture
def trainings(monkeypatch):
    """Replaces the training call; the list of (config, device) it was asked for."""
    calls = []
    monkeypatch.setattr(main, "train_single", lambda config, device, overrides=(): calls.append((config, device, *overrides)) or 0)
    monkeypatch.setattr(main, "config_files", lambda: ["param.json", "configs/other.json"])
    monkeypatch.setattr(main, "device_choices", lambda: ["auto", "cpu", "cuda:0"])
    return calls


@pytest.fixture
def no_processes(monkeypatch):
    def refuse(jobs, *args, **kwargs):
        raise AssertionError(f"jobs were started: {[job.name for job in jobs]}")

    monkeypatch.setattr(plan_module, "run_jobs", refuse)


def task_folder(tmp_path, broken=False, **settings):
    """The example tasks (writing under tmp_path), optionally a broken one, and a config.json."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name in EXAMPLE_TASKS:
        with open(os.path.join(EXAMPLES, name), encoding="utf-8") as fh:
            task = json.load(fh)
        task["train_args"]["folder_name"] = str(tmp_path / "runs")
        (folder / name).write_text(json.dumps(task))
    if broken:
        task["model_args"]["vocab_size"] = 1
        (folder / "broken.json").write_text(json.dumps(task))
    (folder / "config.json").write_text(json.dumps({"gpus": [], "log_dir": str(tmp_path / "logs"), **settings}))
    return folder


# -- the menu ---------------------------------------------------------------------------------


def test_menu_asks_again_on_invalid_input_then_runs_the_chosen_config(monkeypatch, capsys, trainings):
    feed(monkeypatch, "x\n1\n7\n2\ncpu\n")
    assert main.main([]) == 0
    assert trainings == [("configs/other.json", "cpu")]
    out = capsys.readouterr().out
    assert "'x' is not a choice; choose one of: 1, 2, q" in out
    assert "'7' is not a choice; choose one of: 1, 2" in out


def test_menu_enter_takes_the_defaults(monkeypatch, trainings):
    feed(monkeypatch, "\n\n\n")
    assert main.main([]) == 0
    assert trainings == [("param.json", "auto")]


@pytest.mark.parametrize("typed", ["", "1\n", "1\n2\n", "q\n"], ids=["at-mode", "at-config", "at-device", "quit"])
def test_end_of_input_or_quit_leaves_cleanly_without_training(monkeypatch, trainings, typed):
    feed(monkeypatch, typed)
    assert main.main([]) == 0
    assert trainings == []


def test_launcher_script_exits_0_when_stdin_is_empty():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "main.py")], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "single task" in done.stdout and "Traceback" not in done.stderr


def test_menu_multitask_shows_the_plan_and_can_be_declined(tmp_path, monkeypatch, capsys, no_processes):
    monkeypatch.setattr(main, "DEFAULT_TASK_DIR", str(task_folder(tmp_path)))
    feed(monkeypatch, "2\n\nn\n")  # multitask, the default folder, decline
    assert main.main([]) == 0
    out = capsys.readouterr().out
    assert "vqvae2_k64" in out and "vqvae2_k512" in out and "Start 2 task(s)?" in out
    assert not (tmp_path / "logs").exists()


def test_menu_takes_a_typed_config_path_and_says_what_else_it_accepts(tmp_path, monkeypatch, capsys, trainings):
    mine = tmp_path / "mine.json"
    mine.write_text("{}")
    feed(monkeypatch, f"1\n{tmp_path / 'missing.json'}\n{mine}\ncpu\n")
    assert main.main([]) == 0
    assert trainings == [(str(mine), "cpu")]
    assert "is not a choice; choose one of: 1, 2, or type the path of a config file" in capsys.readouterr().out


def test_menu_multitask_takes_a_typed_task_folder(tmp_path, monkeypatch, capsys, no_processes):
    folder = task_folder(tmp_path)
    feed(monkeypatch, f"2\n{folder}\nn\n")
    assert main.main([]) == 0
    out = capsys.readouterr().out
    assert f"2 task(s) from {folder}" in out and "Start 2 task(s)?" in out


def test_single_mode_passes_overrides_to_the_training(monkeypatch, trainings):
    assert main.main(["--mode", "single", "--config", "mine.json", "--set", "train_args.lr=0.1", "data_args.seed=3"]) == 0
    assert trainings == [("mine.json", None, "train_args.lr=0.1", "data_args.seed=3")]


def test_config_choices_put_param_json_first():
    found = main.config_files()
    assert found[0] == os.path.relpath(os.path.join(ROOT, "param.json"))
    assert all(path.endswith(".json") for path in found)
    assert main.device_choices()[:2] == ["auto", "cpu"]


# -- flags ------------------------------------------------------------------------------------


def test_single_mode_flags_train_without_asking(monkeypatch, trainings):
    feed(monkeypatch, "")  # would end the menu at once if it were shown
    assert main.main(["--mode", "single", "--config", "mine.json", "--device", "cpu"]) == 0
    assert main.main(["--mode", "single"]) == 0
    assert trainings == [("mine.json", "cpu"), (os.path.relpath(os.path.join(ROOT, "param.json")), None)]


def test_single_mode_bad_config_is_one_line_and_exit_2(tmp_path, caplog):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_type": "VqVae2", "train_args": {"num_steps": 0}}))
    assert main.main(["--mode", "single", "--config", str(bad), "--device", "cpu"]) == 2
    assert "train_args.num_steps = 0: expected a value > 0" in caplog.text


def test_help_documents_both_modes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--mode", "--config", "--device", "--dir", "--dry-run", "config.json"):
        assert flag in out


@pytest.mark.parametrize("argv", [["--dry-run"], ["--mode", "single", "--dir", "x"], ["--config", "param.json"],
                                  ["--mode", "multi", "--set", "train_args.lr=1"]])
def test_flags_of_the_other_mode_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main(argv)
    assert exit_info.value.code == 2
    assert "go with --mode" in capsys.readouterr().err


# -- multitask --------------------------------------------------------------------------------


def test_dry_run_shows_the_plan_and_starts_nothing(tmp_path, capsys, no_processes):
    folder = task_folder(tmp_path, broken=True, cpu_concurrency=2)
    assert main.main(["--mode", "multi", "--dir", str(folder), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 task(s)" in out and "2 slot(s) (cpu x2)" in out
    assert f"-> {tmp_path / 'runs' / 'multitask_vqvae2_k64'}" in out
    assert "broken" in out and "NOT RUN" in out and "model_args.vocab_size = 1" in out
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"tasks_per_gpu": 0}, "config.json: tasks_per_gpu = 0: expected a value > 0"),
        ({"gpus": "all"}, "gpus = 'all': expected one of 'auto' or a list of integers"),
        ({"gpus": [0, 0]}, "gpus = [0, 0]: expected each GPU once"),
        ({"retries": -1}, "retries = -1: expected a value >= 0"),
        ({"gpu": [0]}, "gpu: unknown key (did you mean 'gpus'?)"),
        ({"tasks": "nothing*.json"}, "tasks = 'nothing*.json': expected task files, none found"),
    ],
)
def test_bad_multitask_config_names_the_key(tmp_path, caplog, no_processes, settings, message):
    folder = task_folder(tmp_path, **settings)
    assert main.main(["--mode", "multi", "--dir", str(folder)]) == 2
    assert message in caplog.text


def test_task_selection_takes_names_and_globs_and_never_config_json(tmp_path):
    for name in ("b.json", "a1.json", "a2.json", "config.json", "notes.txt"):
        (tmp_path / name).write_text("{}")
    chosen = task_files(str(tmp_path), MultitaskConfig(tasks=["b.json", "a*.json", "*.json"]))
    assert [os.path.basename(p) for p in chosen] == ["b.json", "a1.json", "a2.json"]
    with pytest.raises(ConfigError, match=r"tasks\[1\] = 'missing.json'"):
        task_files(str(tmp_path), MultitaskConfig(tasks=["b.json", "missing.json"]))


# Stands in for a training: writes the run summary a trainer would, then exits with the code given.
FAKE_TRAINING = """
import json, os, sys
run_dir, code = sys.argv[1], int(sys.argv[2])
os.makedirs(run_dir, exist_ok=True)
best = {"val/stats/psnr": 20.0 + len(run_dir) % 5}
summary = {"status": "finished", "steps": 40, "last_checkpoint": os.path.join(run_dir, "last.pth.tar"), "best": best}
with open(os.path.join(run_dir, "run_summary.json"), "w") as fh:
    json.dump(summary, fh)
sys.exit(code)
"""


def test_run_plan_runs_valid_tasks_and_records_the_rest(tmp_path):
    plan = make_plan(str(task_folder(tmp_path, broken=True, cpu_concurrency=2, retries=1)))
    seen = []

    def fake_command(task, slot, resume=False):
        seen.append((task.name, slot.device, slot.env["CUDA_VISIBLE_DEVICES"], resume))
        code = 1 if task.name == "vqvae2_k512" else 0
        return [sys.executable, "-c", FAKE_TRAINING, task.run_dir, str(code)]

    rows = run_plan(plan, command=fake_command)

    # the retry resumes (from the task's newest good checkpoint)
    assert sorted(seen) == [("vqvae2_k512", "cpu", "", False), ("vqvae2_k512", "cpu", "", True),
                            ("vqvae2_k64", "cpu", "", False)]
    by_task = {row["task"]: row for row in rows}
    assert [row["task"] for row in rows] == ["broken", "vqvae2_k512", "vqvae2_k64"]
    assert (by_task["broken"]["status"], by_task["broken"]["attempts"]) == ("invalid", 0)
    assert "model_args.vocab_size = 1" in by_task["broken"]["error"]
    k512, k64 = by_task["vqvae2_k512"], by_task["vqvae2_k64"]
    assert (k512["status"], k512["exit_code"], k512["attempts"]) == ("failed", 1, 2)
    assert (k64["status"], k64["exit_code"], k64["attempts"], k64["device"]) == ("succeeded", 0, 1, "cpu")
    run_dir = str(tmp_path / "runs" / "multitask_vqvae2_k64")
    assert k64["best_val_psnr"] == 20.0 + len(run_dir) % 5
    assert k64["last_checkpoint"] == os.path.join(run_dir, "last.pth.tar")
    assert os.path.exists(k64["log"])
    saved = json.loads((tmp_path / "logs" / "summary.json").read_text())
    assert saved == {"interrupted": False, "tasks": rows}


def test_dry_run_checks_data_paths_and_run_folders_of_every_task(tmp_path, capsys, no_processes):
    folder = task_folder(tmp_path)
    task = json.loads((folder / "vqvae2_k512.json").read_text())
    task["data_process"]["train"] = str(tmp_path / "no_such_folder")
    (folder / "vqvae2_k512.json").write_text(json.dumps(task))
    used = tmp_path / "runs" / "multitask_vqvae2_k64"
    used.mkdir(parents=True)
    (used / "metrics.jsonl").write_text('{"step": 1}\n')  # an earlier batch trained there
    assert main.main(["--mode", "multi", "--dir", str(folder), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    k512 = next(line for line in lines if "vqvae2_k512" in line)
    k64 = next(line for line in lines if "vqvae2_k64.json" in line)
    assert "NOT RUN" in k512 and "data_process.train" in k512 and "no_such_folder" in k512
    assert "NOT RUN" in k64 and "already holds a run" in k64
    assert main.main(["--mode", "multi", "--dir", str(folder), "--dry-run", "--resume"]) == 0
    k64 = next(line for line in capsys.readouterr().out.splitlines() if "vqvae2_k64.json" in line)
    assert "NOT RUN" not in k64


# Trains the task in a child process and SIGKILLs it once its first checkpoint is on disk.
KILLED_AFTER_FIRST_SAVE = """
import os, signal, subprocess, sys, time
command, checkpoints = sys.argv[1:-1], sys.argv[-1]
child = subprocess.Popen(command)
while child.poll() is None and not any(n.startswith("checkpoint_step") for n in os.listdir(checkpoints)
                                       if os.path.isdir(checkpoints)):
    time.sleep(0.05)
child.send_signal(signal.SIGKILL)
child.wait()
sys.exit(1)
"""


def test_a_retry_resumes_the_task_from_its_newest_good_checkpoint(tmp_path):
    folder = task_folder(tmp_path, retries=1)
    for name in EXAMPLE_TASKS[1:]:
        os.remove(folder / name)
    task = json.loads((folder / "vqvae2_k64.json").read_text())
    task["train_args"].update(num_steps=6, save_interval=2, validation_interval=100, device="cpu")
    (folder / "vqvae2_k64.json").write_text(json.dumps(task))
    run_dir = tmp_path / "runs" / "multitask_vqvae2_k64"

    def command(task, slot, resume=False):
        real = plan_module.training_command(task, slot, resume)
        if resume:
            return real
        os.makedirs(run_dir / "checkpoints", exist_ok=True)
        return [sys.executable, "-c", KILLED_AFTER_FIRST_SAVE, *real, str(run_dir / "checkpoints")]

    (row,) = run_plan(make_plan(str(folder)), command=command)
    assert (row["status"], row["attempts"]) == ("succeeded", 2)
    log_text = open(row["log"]).read()
    second_attempt = log_text.split("# attempt 2 of 2")[1]
    assert "resumed from" in second_attempt and "checkpoint_step" in second_attempt
    assert json.loads((run_dir / "run_summary.json").read_text())["steps"] == 6
