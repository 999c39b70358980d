"""Progress for long steps: a tqdm bar on the terminal and a periodic line for a log (Dagster's)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

#: What every long phase reports to: ``progress(phase, done, total)``; ``PhaseProgress`` is the terminal's and the log's.
Progress = Callable[[str, int, int], None]


class PhaseProgress:
    """Callable as ``progress(phase, done, total)``. Logs a line at most every ``every`` seconds per phase
    and when a phase completes."""

    def __init__(self, log: Callable[[str], None] | None = None, every: float = 20.0, bar: bool | None = None):
        self.log = log
        self.every = every
        self.bar = sys.stderr.isatty() if bar is None else bar
        self._bars: dict = {}
        self._last: dict[str, float] = {}
        self._started: dict[str, float] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        self._started.setdefault(phase, now)
        if self.bar:
            from tqdm import tqdm

            bar = self._bars.get(phase)
            if bar is None or bar.total != total:
                if bar is not None:
                    bar.close()
                bar = self._bars[phase] = tqdm(total=total, desc=phase, leave=False)
            bar.update(done - bar.n)
        if self.log and (done >= total or now - self._last.get(phase, self._started[phase]) >= self.every):
            self._last[phase] = now
            elapsed = now - self._started[phase]
            self.log(f"{phase}: {done}/{total} ({100 * done / max(total, 1):.0f}%) after {elapsed:.0f}s")

    def __enter__(self) -> PhaseProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()
