"""Progress of a batch: a live bar on a terminal, plain lines in CI logs."""
from __future__ import annotations

import os
import sys
import time

from .safe_text import one_line

BAR = 30        # the widest bar; it gives way to the label down to MIN_BAR
MIN_BAR = 10


class Progress:
    def __init__(self, total: int, stream=None, clock=time.monotonic):
        self.total = total
        self.stream = stream or sys.stderr
        self.clock = clock
        self.started = clock()
        self.done = 0
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()

    def rate_per_minute(self) -> float:
        elapsed = self.clock() - self.started
        return 60.0 * self.done / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate_per_minute()
        return None if rate == 0 else 60.0 * (self.total - self.done) / rate

    def advance(self, label: str, outcome: str) -> None:
        label, outcome = one_line(label), one_line(outcome)   # an outcome can quote a submission's error
        self.done += 1
        eta = self.eta_s()
        eta_text = "--:--" if eta is None else _clock(eta)
        stats = f"{self.done}/{self.total}  {self.rate_per_minute():.1f}/min  ETA {eta_text}"
        if self.live:
            self.stream.write("\r" + self.live_line(stats, label))
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"[{stats}] {label}: {outcome}\n")
        self.stream.flush()

    def columns(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            return 80

    def live_line(self, stats: str, label: str) -> str:
        """`[#####-----] 12/500  3.1/min  ETA 2:37:10  label`, one column short of the terminal
        (a line that fills the last column wraps on some terminals, and the bar then scrolls)."""
        room = max(40, self.columns()) - 1
        width = max(MIN_BAR, min(BAR, room - len(stats) - 3 - 2 - 12))
        filled = int(width * self.done / max(1, self.total))
        line = f"[{'#' * filled}{'-' * (width - filled)}] {stats}  "
        return (line + label[:max(0, room - len(line))]).ljust(room)[:room]


def _clock(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
