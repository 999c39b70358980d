-- The atlas: mean E per explainer and cohort with its bootstrap 95% CI, and the tests against each baseline.
SELECT explainer, baseline, n, mean_e, mean_e_ci_low, mean_e_ci_high, n_baseline, mean_baseline, baseline_ci_low,
       baseline_ci_high, mw_p, n_paired, paired_mean_diff, wilcoxon_p
FROM explanation_tests
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY explainer = 'contrastive', explainer, baseline
