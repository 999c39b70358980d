-- step 9 of docs/method.md: the distribution of E per explainer against the random-neuron and shuffled baselines, with
-- bootstrap 95% CIs of the means, the skew test, two-sided Mann-Whitney tests and (shuffled) the paired Wilcoxon test.
-- Parameters: $model_id, $prompt_set_id.
SELECT
    explainer, baseline, n, round(mean_e, 3) AS mean_e, round(mean_e_ci_low, 3) AS mean_e_ci_low,
    round(mean_e_ci_high, 3) AS mean_e_ci_high, round(std_e, 3) AS std_e, round(skew, 2) AS skew, skew_p,
    n_baseline, round(mean_baseline, 3) AS mean_baseline, round(baseline_ci_low, 3) AS baseline_ci_low,
    round(baseline_ci_high, 3) AS baseline_ci_high, mw_p, n_paired, round(paired_mean_diff, 3) AS paired_mean_diff, wilcoxon_p,
    round(mean_auc, 3) AS mean_auc
FROM explanation_comparison
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY explainer, baseline;
