-- The atlas: every scored explanation's E (next-token and random-neuron pairs, own and shuffled prompts), for the
-- E histogram against the baselines.
SELECT explainer, cohort, baseline, status, e_score, auc
FROM explanation_scores
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY explainer, cohort, baseline, explanation_id
