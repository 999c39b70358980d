-- Asset metadata of explanation_scores: each scorer's measures against the baselines, the figures that carry signal first.
SELECT explainer, scorer, measure, baseline, n, round(mean, 3) AS mean,
       '[' || round(ci_low, 3) || ', ' || round(ci_high, 3) || ']' AS mean_95ci,
       n_baseline, round(mean_baseline, 3) AS mean_baseline, round(difference, 3) AS difference,
       '[' || round(difference_ci_low, 3) || ', ' || round(difference_ci_high, 3) || ']' AS difference_95ci,
       permutation_p, wilcoxon_p, signal
FROM explanation_comparison
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY signal DESC, permutation_p NULLS LAST, explainer, scorer, measure, baseline
