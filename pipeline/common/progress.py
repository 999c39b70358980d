"""Progress for long steps: a tqdm bar on the terminal and a periodic line for a log (Dagster's)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

#: What every long phase reports to: ``progress(phase, done, total)`` or ``progress(phase, done, total, detail)``
#: (a short note such as cache hits and tokens); ``PhaseProgress`` is the terminal's and the log's.
Progress = Callable[..., None]


class PhaseProgress:
    """Callable as ``progress(phase, done, total, detail='')``. Logs a line at most every ``every`` seconds per
    phase, on its first call and when it completes: done of total, the rate and the time left at that rate, and the detail.
    The rate counts from the first call of the phase, so work done before it (cache hits) is not counted."""

    def __init__(self, log: Callable[[str], None] | None = None, every: float = 20.0, bar: bool | None = None):
        self.log = log
        self.every = every
        self.bar = sys.stderr.isatty() if bar is None else bar
        self._bars: dict = {}
        self._last: dict[str, float] = {}
        self._started: dict[str, float] = {}
        self._first: dict[str, int] = {}

    def __call__(self, phase: str, done: int, total: int, detail: str = "") -> None:
        now = time.monotonic()
        first = phase not in self._started
        if first:
            self._started[phase], self._first[phase] = now, done
        if self.bar:
            from tqdm import tqdm

            bar = self._bars.get(phase)
            if bar is None or bar.total != total:
                if bar is not None:
                    bar.close()
                bar = self._bars[phase] = tqdm(total=total, desc=phase, leave=False)
            bar.update(done - bar.n)
        if self.log and (first or done >= total or now - self._last.get(phase, self._started[phase]) >= self.every):
            self._last[phase] = now
            elapsed = now - self._started[phase]
            line = f"{phase}: {done}/{total} ({100 * done / max(total, 1):.0f}%) after {elapsed:.0f}s"
            rate = (done - self._first[phase]) / elapsed if elapsed > 0 else 0.0
            if 0 < done < total and rate > 0:
                line += f", {_rate(rate)}, about {_duration((total - done) / rate)} left"
            self.log(f"{line}; {detail}" if detail else line)

    def __enter__(self) -> PhaseProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


def _rate(per_second: float) -> str:
    return f"{per_second:.1f}/s" if per_second >= 1 else f"{per_second * 60:.1f}/min"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
