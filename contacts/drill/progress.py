"""The drill's progress on the terminal: one line per phase, and counters within one."""

from __future__ import annotations

import sys
import time

PHASES = 8


class Say:
    """Progress on the terminal (stderr): one line per phase, and counters within one."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.started = time.monotonic()
        self.phase_started = self.started

    def phase(self, number: int, text: str) -> None:
        self.phase_started = time.monotonic()
        print(f"[{number}/{PHASES}] {text}", file=self.stream, flush=True)

    def step(self, text: str) -> None:
        print(f"      {text}", file=self.stream, flush=True)

    def done(self, text: str = "") -> None:
        took = time.monotonic() - self.phase_started
        print(f"      done in {took:.1f} s{': ' + text if text else ''}", file=self.stream,
              flush=True)
