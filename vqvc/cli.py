"""The ``vqvc`` command: one entry point for training, evaluation, the codec and the launcher.

    vqvc train --config C [--device D] [--set KEY=VALUE ...]   train one config (train/train_custom_videos.py)
    vqvc eval --checkpoint C --data DATA [--frames N]          measure a checkpoint (eval.json, eval.md)
    vqvc codec compress|decompress|info|evaluate|fit-prior ... a checkpoint as a video codec (python -m codec)
    vqvc menu [--mode single|multi ...]                        the launcher (python main.py)

``vqvc COMMAND --help`` shows each command's options. Paths are relative to the current folder.
"""
import sys
from typing import Callable, Optional

import main as launcher
from codec.cli import main as codec_main
from train.evaluate_checkpoint import main as eval_main
from train.train_custom_videos import main as train_main
from vqvc import __version__

COMMANDS: dict = {
    "train": lambda argv: train_main(argv, prog="vqvc train"),
    "eval": lambda argv: eval_main(argv, prog="vqvc eval"),
    "codec": codec_main,
    "menu": lambda argv: launcher.main(argv, prog="vqvc menu"),
}


def main(argv: Optional[list] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(__doc__.lstrip())
        return 0 if argv else 2
    if argv[0] == "--version":
        sys.stdout.write(f"vqvc {__version__}\n")
        return 0
    command: Optional[Callable] = COMMANDS.get(argv[0])
    if command is None:
        sys.stderr.write(f"vqvc: unknown command {argv[0]!r}; choose one of: {', '.join(COMMANDS)} (vqvc --help)\n")
        return 2
    return command(argv[1:])
