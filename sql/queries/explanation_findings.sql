-- step 9 of docs/method.md: the distribution of E per explainer against the random-neuron and shuffled baselines, with
-- the skew test and two-sided Mann-Whitney tests. Parameters: $model_id, $prompt_set_id.
SELECT
    explainer, baseline, n, round(mean_e, 3) AS mean_e, round(std_e, 3) AS std_e, round(skew, 2) AS skew, skew_p,
    n_baseline, round(mean_baseline, 3) AS mean_baseline, mw_p, round(mean_auc, 3) AS mean_auc
FROM explanation_comparison
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY explainer, baseline;
