-- docs/method.md, "Scoring explanations": per explainer, scorer and measure, the next-token pairs' mean with its
-- bootstrap 95% CI against the random-neuron and shuffled baselines: the difference with its CI and permutation p, and
-- (shuffled) the paired Wilcoxon test. The figures that carry signal first. Parameters: $model_id, $prompt_set_id.
SELECT
    explainer, scorer, measure, baseline, n, round(mean, 3) AS mean, round(ci_low, 3) AS ci_low, round(ci_high, 3) AS ci_high,
    n_baseline, round(mean_baseline, 3) AS mean_baseline, round(baseline_ci_low, 3) AS baseline_ci_low,
    round(baseline_ci_high, 3) AS baseline_ci_high, round(difference, 3) AS difference,
    round(difference_ci_low, 3) AS difference_ci_low, round(difference_ci_high, 3) AS difference_ci_high,
    permutation_p, mw_p, n_paired, wilcoxon_p, signal, above_chance
FROM explanation_comparison
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY explainer IN ('contrastive', 'lookup'), explainer, signal DESC, above_chance DESC, permutation_p NULLS LAST, scorer, measure, baseline;
