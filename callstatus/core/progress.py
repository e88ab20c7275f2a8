"""A plain-text progress bar on stderr for long commands (seed, simulate)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Redraws one line in place on a terminal; elsewhere prints a line every ten percent."""

    def __init__(self, total: int | None, label: str, stream: TextIO | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = time.monotonic()
        self._drawn_at = 0.0
        self._tenth = 0
        self._tty = self.stream.isatty()

    def advance(self, count: int = 1, note: str = "") -> None:
        self.done += count
        now = time.monotonic()
        if self._tty and now - self._drawn_at >= 0.2:
            self._drawn_at = now
            self.stream.write("\r" + self._line(note) + "\x1b[K")
            self.stream.flush()
        elif not self._tty and self.total:
            tenth = self.done * 10 // self.total
            if tenth > self._tenth:
                self._tenth = tenth
                self.stream.write(self._line(note) + "\n")

    def close(self, note: str = "") -> None:
        if self._tty:
            self.stream.write("\r" + self._line(note) + "\x1b[K\n")
        elif self._tenth < 10 or note:
            self.stream.write(self._line(note) + "\n")
        self.stream.flush()

    def _line(self, note: str) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = f"{self.done / elapsed:,.0f}/s"
        if self.total:
            share = min(self.done / self.total, 1.0)
            filled = int(share * 30)
            bar = "#" * filled + "-" * (30 - filled)
            count = f"{self.done:,}/{self.total:,}"
            return f"{self.label} [{bar}] {share:4.0%} {count} {rate} {note}".rstrip()
        return f"{self.label} {self.done:,} {rate} {note}".rstrip()
