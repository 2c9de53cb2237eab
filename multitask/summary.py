"""The end of a multitask run: one row per task, as a table and as ``summary.json``.

Best validation PSNR and the last checkpoint come from the ``run_summary.json`` the
trainer writes in its run folder; a task that wrote none this time leaves them blank.
"""
import json
import logging
import os
from typing import Optional

from multitask.scheduler import Outcome

log = logging.getLogger(__name__)

RUN_SUMMARY = "run_summary.json"
PSNR_KEY = "val/stats/psnr"
COLUMNS = [  # (row key, header)
    ("task", "task"),
    ("device", "device"),
    ("status", "status"),
    ("exit_code", "exit"),
    ("attempts", "attempts"),
    ("duration_s", "duration s"),
    ("best_val_psnr", "best val PSNR"),
    ("last_checkpoint", "last checkpoint"),
    ("reason", "reason"),
]


def read_run_summary(run_dir: str, newer_than: float) -> dict:
    """The run folder's ``run_summary.json`` if it was written after ``newer_than``, else {}."""
    path = os.path.join(run_dir, RUN_SUMMARY)
    try:
        if os.path.getmtime(path) < newer_than:
            return {}  # left by an earlier run
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable (%s); its results are left blank", path, err)
        return {}
    return data if isinstance(data, dict) else {}


def summary_row(outcome: Outcome, run_dir: Optional[str] = None, error: Optional[str] = None) -> dict:
    """One task's row; ``run_dir`` is where its trainer writes ``run_summary.json``."""
    run = {}
    if run_dir and outcome.started_at is not None:
        run = read_run_summary(run_dir, newer_than=outcome.started_at)
    best = run.get("best") if isinstance(run.get("best"), dict) else {}
    psnr = best.get(PSNR_KEY)
    return {
        "task": outcome.name,
        "device": outcome.device,
        "status": outcome.status,
        "exit_code": outcome.exit_code,
        "attempts": outcome.attempts,
        "duration_s": round(outcome.duration_s, 1),
        "best_val_psnr": round(psnr, 2) if isinstance(psnr, (int, float)) else None,
        "last_checkpoint": run.get("last_checkpoint"),
        "log": outcome.log_path,
        "error": error,
        "reason": error or outcome.reason,
    }


def format_table(rows: list) -> str:
    """Rows as aligned text columns; missing values blank."""
    cells = [[header for _, header in COLUMNS]]
    cells += [["" if row.get(key) is None else str(row[key]) for key, _ in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_summary(path: str, rows: list) -> None:
    """``summary.json``: every row, and whether the run was cut short; replaced atomically."""
    interrupted = any(row["status"] in ("interrupted", "cancelled", "timed_out") for row in rows)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as fh:
        json.dump({"interrupted": interrupted, "tasks": rows}, fh, indent=2)
        fh.write("\n")
    os.replace(temporary, path)
