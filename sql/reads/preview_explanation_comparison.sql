-- Asset metadata of explanation_scores: E against the baselines.
SELECT explainer, baseline, n, round(mean_e, 3) AS mean_e,
       '[' || round(mean_e_ci_low, 3) || ', ' || round(mean_e_ci_high, 3) || ']' AS mean_e_95ci,
       round(std_e, 3) AS std_e, round(skew, 2) AS skew, skew_p, n_baseline, round(mean_baseline, 3) AS mean_baseline,
       '[' || round(baseline_ci_low, 3) || ', ' || round(baseline_ci_high, 3) || ']' AS baseline_95ci,
       mw_p, n_paired, wilcoxon_p, round(mean_auc, 3) AS mean_auc
FROM explanation_comparison
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
