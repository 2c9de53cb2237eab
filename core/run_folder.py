"""The run folder, ``train_args.folder_name/run_name``: checked before anything is written.

One run per folder: a fresh run (no ``resume``, no ``checkpoint_path``) in a folder that
already holds a run is refused in one line, so two runs never mix their checkpoints,
``metrics.jsonl`` and plots. A folder that cannot be created or written is refused the
same way, before any model is built or data read.
"""
import os
import tempfile

from core.config import Config
from core.config_schema import ConfigError

CHECKPOINT_FOLDER = "checkpoints"
RUN_FILES = ("metrics.jsonl", "run_summary.json")  # what a run that started training leaves behind


def traces_of_a_run(run_dir: str) -> list:
    """What in ``run_dir`` shows a run trained there: its checkpoints and result files."""
    found = []
    checkpoints = os.path.join(run_dir, CHECKPOINT_FOLDER)
    if os.path.isdir(checkpoints) and any(
            name.endswith(".pth.tar") and not name.startswith(".") for name in os.listdir(checkpoints)):
        found.append(CHECKPOINT_FOLDER + "/")
    found += [name for name in RUN_FILES if os.path.isfile(os.path.join(run_dir, name))
              and os.path.getsize(os.path.join(run_dir, name)) > 0]
    return found


def is_fresh_run(config: Config) -> bool:
    return config.train_args.resume is None and not config.train_args.checkpoint_path


def check_run_dir(config: Config) -> None:
    """``ConfigError`` if the run folder is in the way of a file, or holds a run a fresh run would mix with."""
    folder, run_dir = config.train_args.folder_name, config.run_dir
    for path in (folder, run_dir):
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"train_args.folder_name = {folder!r}: {path} is a file; expected a folder "
                              "(created if missing)")
    traces = traces_of_a_run(run_dir) if is_fresh_run(config) else []
    if traces:
        raise ConfigError(f"{run_dir} already holds a run ({', '.join(traces)}): set train_args.resume to "
                          "\"auto\" to continue it, or a new train_args.run_name for a new run")


def prepare_run_dir(config: Config, create: bool = True) -> str:
    """Check the run folder (``check_run_dir``) and, with ``create`` (the process that writes it), create it
    and make sure it can be written; returns it."""
    check_run_dir(config)
    run_dir = config.run_dir
    if not create:
        return run_dir
    try:
        os.makedirs(run_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as err:
        raise ConfigError(f"train_args.folder_name = {config.train_args.folder_name!r}: cannot write the run "
                          f"folder {run_dir} ({err.strerror or err}); expected a writable folder") from None
    return run_dir
