-- The atlas: every explanation's scores by each scorer (next-token and random-neuron pairs, own and shuffled prompts),
-- for the histograms against the baselines.
SELECT explainer, scorer, cohort, baseline, status, e_score, calibrated_e, auc, correlation
FROM explanation_scores
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY explainer, scorer, cohort, baseline, explanation_id
