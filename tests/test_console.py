"""What a person sees in a terminal: the menu's single run prints what the script prints, each
line once, no DEBUG lines, log lines never inside the progress bar (run in a pseudo-terminal)."""
import fcntl
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests.helpers import tiny_config, write_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - (\S+) - ([A-Z]+) - ([^\r\n]*)")


def in_terminal(command: list, typed: str = "", timeout: float = 400.0) -> str:
    """Everything ``command`` writes to a 120x40 pseudo-terminal, with ``typed`` as keyboard input."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TERM": "xterm"}
    process = subprocess.Popen(command, cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    if typed:
        os.write(master, typed.encode())
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # the terminal closed: the program ended
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        process.wait(timeout=30)
    assert process.returncode == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


def log_messages(screen: str) -> list:
    """``(level, message)`` of every log line shown, numbers masked (times and rates differ run to run)."""
    return [(level, re.sub(r"\d+(\.\d+)?", "#", message)) for _name, level, message in LOG_LINE.findall(screen)]


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_menu_run_prints_what_the_script_prints_each_line_once_and_no_debug(tmp_path):
    data = tiny_config(tmp_path, train_args={"num_steps": 6, "log_interval": 2, "validation_interval": 3,
                                             "save_interval": 6, "progress_bar": "auto"})
    config = write_config(tmp_path, data, "console.json")
    run_dir = tmp_path / "runs" / "console"

    script = in_terminal([sys.executable, "train/train_custom_videos.py", "--config", config, "--device", "cpu"])
    shutil.rmtree(run_dir)
    menu = in_terminal([sys.executable, "main.py"], typed=f"1\n{config}\ncpu\n")

    from_script, from_menu = log_messages(script), log_messages(menu)
    assert from_menu == from_script
    assert len(from_script) >= 15  # start-up, steps, validations, checkpoints, the end
    assert not [m for m in from_script if m[0] == "DEBUG"]
    assert "DEBUG" not in script and "DEBUG" not in menu  # per-step lines go to the log file only
    twice = [message for _name, _level, message in LOG_LINE.findall(menu) if menu.count(message) > 1]
    assert not twice  # the menu used to print every INFO line twice, in two formats
    assert "train: 100%" in menu  # the progress bar was drawn ...
    for screen in (script, menu):  # ... and every log line starts at the left edge, never inside it
        for match in LOG_LINE.finditer(screen):
            before = screen[screen.rfind("\n", 0, match.start()) + 1:match.start()]
            assert "train:" not in before.split("\r")[-1]
    assert "architecture.txt" in script and "one checkpoint ~" in script
