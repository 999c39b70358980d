"""The look-up benchmark runs end to end on the planted circuit's store (seconds), so it cannot rot: it prints the
look-up/attribution time ratio and the counterfactual cost per pair. Its figures are printed, never asserted."""

from chains import run_bench


def test_bench_lookups_runs_on_a_real_store(tmp_path):
    out = run_bench(tmp_path, "bench_lookups.py", "--pairs", "3")
    assert "look-up / attribution time:" in out and "s per pair" in out, out
