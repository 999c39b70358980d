-- The atlas: each next-token pair's explanations with their scores, the LLM's first.
SELECT layer, neuron, head_layer, head, explainer, status, explanation, e_score, auc, calibrated_e, embedding_auc, simulation_correlation, reason
FROM pair_explanations
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id AND cohort = 'next_token'
ORDER BY explainer IN ('contrastive', 'lookup'), explainer
