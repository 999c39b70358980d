-- The atlas: per explainer, scorer and measure the next-token pairs' mean with its bootstrap 95% CI against each
-- baseline, the difference with its CI and the tests; the figures that carry signal first.
SELECT explainer, scorer, measure, baseline, chance, n, mean, ci_low, ci_high, n_baseline, mean_baseline, baseline_ci_low,
       baseline_ci_high, difference, difference_ci_low, difference_ci_high, permutation_p, mw_p, n_paired, wilcoxon_p, signal, above_chance
FROM explanation_comparison
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY signal DESC, above_chance DESC, explainer IN ('contrastive', 'lookup'), explainer, scorer, measure, baseline
