"""Whether explanations carry signal (docs/method.md, "Scoring explanations"): per explainer, scorer and measure,
the next-token pairs' mean with its bootstrap 95% CI against each baseline (the random-neuron pairs; the same
explanations scored on another pair's prompts), the difference of the means with its bootstrap CI, a permutation
test of it, the two-sided Mann-Whitney U test, and against the shuffled baseline the paired Wilcoxon test."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The measures each scorer gives (columns of ``explanation_scores``), the figure that carries signal first.
MEASURES = {"detection": ("auc", "calibrated_e", "e_score"), "embedding": ("auc", "calibrated_e"), "simulation": ("correlation",)}
#: What each measure is for an explanation that says nothing about the prompts.
CHANCE = {"e_score": 0.5, "calibrated_e": 0.5, "auc": 0.5, "correlation": 0.0}
BASELINES = ("random_neurons", "shuffled")

TEST_COLUMNS = [
    "explainer", "scorer", "measure", "baseline", "chance", "n", "mean", "ci_low", "ci_high", "std", "skew", "skew_z", "skew_p",
    "n_baseline", "mean_baseline", "baseline_ci_low", "baseline_ci_high", "std_baseline",
    "difference", "difference_ci_low", "difference_ci_high", "permutation_p", "mw_u", "mw_p", "n_paired", "wilcoxon_w", "wilcoxon_p",
]

#: Resamples per bootstrap interval and per permutation test, and their seed (fixed: a rerun writes the same figures).
BOOTSTRAP_RESAMPLES = 10_000
PERMUTATION_RESAMPLES = 10_000
SEED = 0


def _resampled_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = len(x)
    chunk = max(1, min(n_resamples, (1 << 22) // n))  # index matrices of at most ~4M entries whatever n is
    return np.concatenate([x[rng.integers(0, n, size=(min(chunk, n_resamples - done), n))].mean(axis=1) for done in range(0, n_resamples, chunk)])


def bootstrap_mean_ci(values, level: float = 0.95, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = SEED) -> tuple[float | None, float | None]:
    """Percentile bootstrap confidence interval of the mean of ``values``: the (1 - level)/2 and (1 + level)/2
    quantiles of the means of ``n_resamples`` resamples with replacement, seeded. (None, None) with fewer than
    two values, whose resamples would show no spread at all."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None, None
    if np.ptp(x) == 0:  # every resample is the sample itself
        return float(x[0]), float(x[0])
    means = _resampled_means(x, n_resamples, np.random.default_rng(seed))
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def bootstrap_difference_ci(a, b, level: float = 0.95, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = SEED) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of mean(a) - mean(b) for two independent samples, each resampled on its own."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return None, None
    rng = np.random.default_rng(seed)
    differences = _resampled_means(x, n_resamples, rng) - _resampled_means(y, n_resamples, rng)
    low, high = np.quantile(differences, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _mean_difference(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def permutation_p(a, b, paired: bool, n_resamples: int = PERMUTATION_RESAMPLES, seed: int = SEED) -> float | None:
    """Two-sided permutation test of mean(a) - mean(b): labels exchanged between the samples (independent), or the
    signs of each pair's difference flipped (paired). Exact where the permutations are fewer than ``n_resamples``.
    None where the test is undefined (fewer than two values a side; no spread at all)."""
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or len(y) < 2 or np.ptp(np.concatenate([x, y])) == 0:
        return None
    if paired and not np.any(np.round(x - y, 12)):
        return None
    test = stats.permutation_test(
        (x, y), _mean_difference, permutation_type="samples" if paired else "independent", vectorized=True,
        n_resamples=n_resamples, alternative="two-sided", rng=np.random.default_rng(seed),
    )
    return float(min(1.0, test.pvalue))


def paired_wilcoxon(differences: np.ndarray) -> tuple[float | None, float | None]:
    """Two-sided Wilcoxon signed-rank test of paired differences (None with fewer than two pairs or none non-zero)."""
    from scipy import stats

    if len(differences) < 2 or not np.any(differences != 0):
        return None, None
    test = stats.wilcoxon(differences, alternative="two-sided")
    return float(test.statistic), float(test.pvalue)


def _distribution(values: np.ndarray) -> dict:
    """Mean, bootstrap CI, std and the skew test of the next-token pairs' values."""
    from scipy import stats

    spread = len(values) > 2 and np.ptp(values) > 0  # skew is undefined (and warns) when every value is equal
    out = {"n": len(values), "mean": float(values.mean()) if len(values) else None, "std": float(values.std(ddof=1)) if len(values) > 1 else None,
           "skew": float(stats.skew(values)) if spread else None, "skew_z": None, "skew_p": None}
    out["ci_low"], out["ci_high"] = bootstrap_mean_ci(values)
    if len(values) >= 8 and spread:
        test = stats.skewtest(values)
        out["skew_z"], out["skew_p"] = float(test.statistic), float(test.pvalue)
    return out


def _against(own: pd.DataFrame, base: pd.DataFrame, measure: str, paired: bool) -> dict:
    """The baseline's distribution and the tests of own against it."""
    from scipy import stats

    x = own[measure].astype(float).to_numpy()
    y = base[measure].astype(float).to_numpy()
    out = {"n_baseline": len(y), "mean_baseline": float(y.mean()) if len(y) else None,
           "std_baseline": float(y.std(ddof=1)) if len(y) > 1 else None, "mw_u": None, "mw_p": None,
           "n_paired": None, "wilcoxon_w": None, "wilcoxon_p": None, "difference": None, "difference_ci_low": None,
           "difference_ci_high": None, "permutation_p": None}
    out["baseline_ci_low"], out["baseline_ci_high"] = bootstrap_mean_ci(y)
    if len(x) and len(y):
        test = stats.mannwhitneyu(x, y, alternative="two-sided")
        out["mw_u"], out["mw_p"] = float(test.statistic), float(test.pvalue)
    if paired:  # each explanation's own score against its score on another pair's prompts
        both = own[["explanation_id", measure]].merge(base[["explanation_id", measure]], on="explanation_id", suffixes=("_own", "_base"))
        a, b = both[f"{measure}_own"].astype(float).to_numpy(), both[f"{measure}_base"].astype(float).to_numpy()
        differences = np.round(a - b, 12)  # ratios of small counts: equal differences tie, equal scores give 0, exactly
        out["n_paired"] = len(differences)
        out["wilcoxon_w"], out["wilcoxon_p"] = paired_wilcoxon(differences)
        if len(differences):
            out["difference"] = float(differences.mean())
        out["difference_ci_low"], out["difference_ci_high"] = bootstrap_mean_ci(differences)
        out["permutation_p"] = permutation_p(a, b, paired=True)
    else:
        if len(x) and len(y):
            out["difference"] = float(x.mean() - y.mean())
        out["difference_ci_low"], out["difference_ci_high"] = bootstrap_difference_ci(x, y)
        out["permutation_p"] = permutation_p(x, y, paired=False)
    return out


def explanation_tests(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per explainer, scorer, measure and baseline from the ``explanation_scores`` rows (only those
    scored, and with the measure present): the next-token pairs' own scores against the baseline."""
    rows = []
    scored = scores[scores["status"] == "scored"]
    for (explainer, scorer), group in scored.groupby(["explainer", "scorer"], sort=True):
        for measure in MEASURES.get(scorer, ()):
            present = group[group[measure].notna()]
            own = present[(present["cohort"] == "next_token") & (present["baseline"] == "none")]
            if not len(present):
                continue
            baselines = {
                "random_neurons": present[(present["cohort"] == "random") & (present["baseline"] == "none")],
                "shuffled": present[present["baseline"] == "shuffled"],
            }
            values = own[measure].astype(float).to_numpy()
            distribution = _distribution(values)
            for baseline, base in baselines.items():
                rows.append({"explainer": explainer, "scorer": scorer, "measure": measure, "baseline": baseline, "chance": CHANCE[measure],
                             **distribution, **_against(own, base, measure, paired=baseline == "shuffled")})
    return pd.DataFrame(rows, columns=TEST_COLUMNS)
