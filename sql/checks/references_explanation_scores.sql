-- Referential integrity (asset check explanation_scores_valid): every score is of a recorded explanation, and
-- carries that explanation's model, prompt set, explainer and pair.
-- Parameters: $model_id, $prompt_set_id. One row per score; every boolean column must be true.
SELECT c.explanation_id, c.scorer, c.split, c.baseline, c.explainer, c.layer, c.neuron, c.head_layer, c.head,
       x.explanation_id IS NOT NULL AS explanation_found,
       coalesce(x.model_id = c.model_id AND x.prompt_set_id = c.prompt_set_id AND x.explainer = c.explainer
                AND x.layer = c.layer AND x.neuron = c.neuron AND x.head_layer = c.head_layer AND x.head = c.head, false) AS pair_matches
FROM explanation_scores c
LEFT JOIN explanations x ON x.explanation_id = c.explanation_id
WHERE c.model_id = $model_id AND c.prompt_set_id = $prompt_set_id
ORDER BY c.explainer, c.layer, c.neuron, c.head_layer, c.head, c.baseline;
