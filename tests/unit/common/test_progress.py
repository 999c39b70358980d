"""The progress lines every long phase prints (pipeline/common/progress.py): the total at once, then done of total
with the rate and the time left, and a phase's own detail (the LLM steps: cache hits and tokens)."""

from lookups.pipeline.common import progress as progress_module
from lookups.pipeline.common.progress import PhaseProgress


def test_a_phase_prints_its_total_at_once_then_rate_time_left_and_detail(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    lines = []
    tracker = PhaseProgress(lines.append, every=20.0, bar=False)
    tracker("scoring: detection", 40, 400, "40 from the cache, 360 to ask")  # the first call prints, before any work
    now[0] += 5
    tracker("scoring: detection", 50, 400, "40 from the cache, 1,200 tokens")  # too soon for another line
    now[0] += 25
    tracker("scoring: detection", 100, 400, "40 from the cache, 7,000 tokens")
    now[0] += 300
    tracker("scoring: detection", 400, 400, "40 from the cache, 35,000 tokens")
    assert lines == [
        "scoring: detection: 40/400 (10%) after 0s; 40 from the cache, 360 to ask",
        # 60 asked in 30 s: 2.0/s (the cache hits are not counted), 300 left: 2m30s
        "scoring: detection: 100/400 (25%) after 30s, 2.0/s, about 2m30s left; 40 from the cache, 7,000 tokens",
        "scoring: detection: 400/400 (100%) after 330s; 40 from the cache, 35,000 tokens",
    ]


def test_a_slow_phase_reads_per_minute_and_a_plain_call_still_works():
    lines = []
    tracker = PhaseProgress(lines.append, every=0.0, bar=False)
    tracker("harvest", 0, 10)
    assert lines == ["harvest: 0/10 (0%) after 0s"]
    assert progress_module._rate(0.05) == "3.0/min" and progress_module._duration(4000) == "1h06m"
