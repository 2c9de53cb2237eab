"""What both benchmark scripts share: a clock, a memory probe, config merging and the printed table.

The machines these run on are shared and noisy, so every script measures the things it
compares alternately in one process and reports ratios; absolute rates are context.
"""
import sys
import time


class Stopwatch:
    """Accumulates the wall time of the ``with`` blocks it times."""

    def __init__(self):
        self.seconds = 0.0

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._start
        return False


def reset_peak_rss() -> bool:
    """Restart the kernel's resident-set high-water mark (Linux); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_mib(field: str = "VmRSS") -> float:
    """This process's resident memory (``VmRSS``) or its high-water mark (``VmHWM``) in MiB; NaN off Linux."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def format_table(headers: list, rows: list) -> str:
    """Columns padded to their widest cell; numbers right-aligned."""
    text = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h)] + [len(cells[i]) for cells in text]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    for row, cells in zip(rows, text):
        lines.append("  ".join(c.rjust(w) if _is_number(v) else c.ljust(w) for v, c, w in zip(row, cells, widths)))
    return "\n".join(line.rstrip() for line in lines)


def write(text: str = "") -> None:
    """The scripts' output is their report: written to stdout, unbuffered line by line."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: not measured
            return "-"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)
