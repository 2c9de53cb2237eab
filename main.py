"""vqvc launcher: train one config, or every task of a multitask folder on a GPU pool.

    python main.py                                                 a menu asks what to run
    python main.py --mode single --config param.json --device cpu  one training, in this process
                   [--set train_args.lr=1e-4 ...]                 (config keys overridden)
    python main.py --mode multi --dir multitask [--dry-run] [--resume]  every task JSON of the folder

Multitask mode reads the folder's config.json (GPUs, tasks per GPU, CPU concurrency,
task files, retries, log folder), runs each task in its own process with its GPU in
CUDA_VISIBLE_DEVICES, and ends with a summary table (also written as summary.json
beside the task logs). Ctrl-C asks every task to save a checkpoint and stop; --resume
continues such a batch, every task from its newest good checkpoint.

Exit status (single and multi): 0 finished, 1 failed, 2 bad config or input,
3 training diverged, 74 run folder not writable, 75 interrupted with checkpoints saved.
"""
import argparse
import glob
import logging
import os
import sys

from core import exit_codes
from core.config_schema import ConfigError
from log_utils.log_utils import setup_console
from multitask.devices import visible_gpus
from multitask.plan import make_plan, run_plan
from multitask.summary import format_table
from train.train_custom_videos import add_override_option
from train.train_custom_videos import main as train_main

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(ROOT, "param.json")
DEFAULT_TASK_DIR = os.path.join(ROOT, "multitask")
EXIT_BAD_CONFIG = exit_codes.BAD_INPUT
EXIT_INTERRUPTED = exit_codes.INTERRUPTED  # stopped by Ctrl-C, tasks saved their checkpoints
EXIT_CTRL_C = 130  # the shell's code for Ctrl-C, when nothing was running

log = logging.getLogger("vqvc")


def say(text: str) -> None:
    """Launcher dialogue and tables go to stdout; progress goes through logging."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def ask(question: str, choices: dict, default: str, typed=None) -> str:
    """Ask until the answer is a key of ``choices`` or one of its labels; Enter takes ``default``.

    ``typed``, if given, is ``(accept, what)``: an answer for which ``accept(answer)`` holds
    (e.g. ``os.path.isfile``) is returned as typed. End of input raises ``EOFError``, which
    leaves the launcher cleanly.
    """
    for key, label in choices.items():
        say(f"  {key}) {label}")
    while True:
        answer = input(f"{question} [{default}]: ").strip()
        if not answer:
            return default
        for key, label in choices.items():
            if answer.lower() in (key.lower(), str(label).lower()):
                return key
        if typed is not None and typed[0](answer):
            return answer
        alternative = f", or type the path of {typed[1]}" if typed is not None else ""
        say(f"'{answer}' is not a choice; choose one of: {', '.join(choices)}{alternative}")


def pick(question: str, options: list, typed=None) -> str:
    """One of ``options`` by number (or by name), or a path ``typed`` accepts; the first is the default."""
    numbered = {str(i): option for i, option in enumerate(options, 1)}
    answer = ask(question, numbered, "1", typed)
    return numbered.get(answer, answer)


def config_files() -> list:
    """``param.json`` first, then the other JSON files of the repository root and ``configs/``."""
    found = sorted(glob.glob(os.path.join(ROOT, "*.json"))) + sorted(glob.glob(os.path.join(ROOT, "configs", "*.json")))
    found.sort(key=lambda path: path != DEFAULT_CONFIG)  # stable: only moves param.json to the front
    return [os.path.relpath(path) for path in found]


def task_folders() -> list:
    """``multitask/`` first, then other folders here that hold a multitask ``config.json``."""
    found = [os.path.relpath(DEFAULT_TASK_DIR)]
    for path in sorted(glob.glob(os.path.join("*", "config.json"))):
        folder = os.path.dirname(path)
        if os.path.abspath(folder) != os.path.abspath(DEFAULT_TASK_DIR) and glob.glob(os.path.join(folder, "*.json")):
            found.append(folder)
    return found


def device_choices() -> list:
    return ["auto", "cpu"] + [f"cuda:{i}" for i in range(len(visible_gpus()))]


def train_single(config_path: str, device, overrides=()) -> int:
    """Train one config in this process, exactly as ``train/train_custom_videos.py`` does; its exit code.

    ``device`` None keeps the config's ``train_args.device``; ``overrides`` are ``--set`` items.
    The trainer saves a checkpoint on Ctrl-C.
    """
    argv = ["--config", config_path] + (["--device", device] if device else [])
    return train_main(argv + (["--set", *overrides] if overrides else []))


def run_multi(folder: str, dry_run: bool = False, confirm: bool = False, resume: bool = False) -> int:
    """Show the plan, then (unless ``dry_run``, or declined) run it and print the summary."""
    try:
        plan = make_plan(folder, resume=resume)
    except ConfigError as err:
        log.error("%s", err)
        return EXIT_BAD_CONFIG
    say(plan.describe())
    if dry_run:
        return 0
    if not plan.runnable:
        log.error("%s: no valid task to run", folder)
        return EXIT_BAD_CONFIG
    if confirm and ask(f"Start {len(plan.runnable)} task(s)?", {"y": "yes", "n": "no"}, "y") == "n":
        return 0
    rows = run_plan(plan)
    say(format_table(rows))
    say(f"summary written to {plan.summary_path}")
    statuses = {row["status"] for row in rows}
    if statuses & {"interrupted", "cancelled", "timed_out"}:
        return EXIT_INTERRUPTED
    return exit_codes.FINISHED if statuses == {"succeeded"} else exit_codes.FAILED


def menu() -> int:
    say("vqvc launcher")
    mode = ask("Run", {"1": "single task", "2": "multitask", "q": "quit"}, "1")
    if mode == "q":
        return 0
    if mode == "2":
        folder = pick("Task folder (number or path)", task_folders(), (os.path.isdir, "a folder of task JSONs"))
        return run_multi(folder, confirm=True)
    configs = config_files()
    if not configs:
        log.error("no config JSON in %s or %s", ROOT, os.path.join(ROOT, "configs"))
        return EXIT_BAD_CONFIG
    config_path = pick("Config (number or path)", configs, (os.path.isfile, "a config file"))
    device = pick("Device", device_choices())
    return train_single(config_path, device)


def parse_args(argv=None, prog="main.py") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mode", choices=["single", "multi"], help="skip the menu: train one config, or a task folder")
    parser.add_argument("--config", help="single: the config JSON (default: param.json)")
    parser.add_argument("--device", help="single: auto, cpu or cuda:N (default: train_args.device of the config)")
    add_override_option(parser)
    parser.add_argument("--dir", help="multi: folder of task JSONs and config.json (default: multitask/)")
    parser.add_argument("--dry-run", action="store_true",
                        help="multi: check every task (config, data paths, run folder), show the plan, start nothing")
    parser.add_argument("--resume", action="store_true",
                        help="multi: continue every task from its newest good checkpoint (e.g. after Ctrl-C)")
    args = parser.parse_args(argv)
    if args.mode != "single" and (args.config or args.device or args.overrides):
        parser.error("--config, --device and --set go with --mode single")
    if args.mode != "multi" and (args.dir or args.dry_run or args.resume):
        parser.error("--dir, --dry-run and --resume go with --mode multi")
    return args


def main(argv=None, prog="main.py") -> int:
    args = parse_args(argv, prog)
    setup_console()  # the one console handler: a run started here prints what the script prints
    try:
        if args.mode == "single":
            return train_single(args.config or os.path.relpath(DEFAULT_CONFIG), args.device, args.overrides)
        if args.mode == "multi":
            return run_multi(args.dir or os.path.relpath(DEFAULT_TASK_DIR), dry_run=args.dry_run, resume=args.resume)
        return menu()
    except EOFError:  # input ended (Ctrl-D, or a script's stdin ran out): nothing more to do
        say("")
        return 0
    except KeyboardInterrupt:  # Ctrl-C at a prompt, before anything ran
        return EXIT_CTRL_C


if __name__ == "__main__":
    sys.exit(main())
