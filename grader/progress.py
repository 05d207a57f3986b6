"""Progress of a batch: a live bar on a terminal, plain lines in CI logs."""
from __future__ import annotations

import sys
import time


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
        self.done += 1
        eta = self.eta_s()
        eta_text = "--:--" if eta is None else f"{int(eta // 60)}:{int(eta % 60):02d}"
        stats = f"{self.done}/{self.total}  {self.rate_per_minute():.1f}/min  ETA {eta_text}"
        if self.live:
            width = 30
            filled = int(width * self.done / max(1, self.total))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {stats}  {label[:30]:<30}")
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"[{stats}] {label}: {outcome}\n")
        self.stream.flush()
