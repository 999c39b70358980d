-- Explained pairs with their explanation and scores on held-out prompts, best first, per explainer (an LLM and the
-- no-LLM references): detection AUC and E, calibrated E, embedding AUC, simulation correlation, and E on another pair's
-- prompts. Parameters: $model_id, $prompt_set_id, $limit.
SELECT
    x.cohort, x.layer, x.neuron, x.token, 'L' || x.head_layer || 'H' || x.head AS head, x.explainer,
    round(x.auc, 3) AS auc, round(x.e_score, 3) AS e, round(x.calibrated_e, 3) AS calibrated_e,
    round(x.embedding_auc, 3) AS embedding_auc, round(x.simulation_correlation, 3) AS simulation_r,
    round(x.shuffled_e_score, 3) AS e_shuffled,
    coalesce(x.reason, x.status) AS note, left(x.explanation, 200) AS explanation
FROM pair_explanations x
WHERE x.model_id = $model_id AND x.prompt_set_id = $prompt_set_id
ORDER BY x.explainer IN ('contrastive', 'lookup'), x.cohort, coalesce(x.auc, x.embedding_auc) DESC NULLS LAST
LIMIT $limit;
