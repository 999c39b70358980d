"""The intervention benchmark runs end to end on the planted circuit's store (seconds), so it cannot rot: it prints
the resumed ablation against the one from the embedding, the knockout's and the QK attribution's cost against the
look-ups', and the substitution test's cached variants against the full ones. Its figures are printed, never asserted."""

from chains import run_bench


def test_bench_interventions_runs_on_a_real_store(tmp_path):
    out = run_bench(tmp_path, "bench_interventions.py", "--pairs", "3")
    for line in ("resumed / full:", "knockout, truncated:", "knockout, untruncated:", "QK attribution:", "substitution test:", "cached / full:",
                 "cached against full verdicts: 0 of"):
        assert line in out, out
