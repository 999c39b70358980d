-- Explained pairs with their explanation and Head Explanation Score E on held-out prompts, best first, per
-- explainer (an LLM and the contrastive reference). Parameters: $model_id, $prompt_set_id, $limit.
SELECT
    x.cohort, x.layer, x.neuron, x.token, 'L' || x.head_layer || 'H' || x.head AS head, x.explainer,
    round(x.e_score, 3) AS e, round(x.auc, 3) AS auc, round(x.shuffled_e_score, 3) AS e_shuffled,
    coalesce(x.reason, x.status) AS note, left(x.explanation, 200) AS explanation
FROM pair_explanations x
WHERE x.model_id = $model_id AND x.prompt_set_id = $prompt_set_id
ORDER BY x.explainer = 'contrastive', x.cohort, x.e_score DESC NULLS LAST
LIMIT $limit;
