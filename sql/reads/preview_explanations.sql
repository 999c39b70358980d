-- Asset metadata of explanations: a sample, the LLM's first.
SELECT cohort, layer, neuron, token, head_layer, head, explainer, status, left(explanation, 160) AS explanation
FROM explanations
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id AND list_contains($explainers, explainer)
ORDER BY explainer <> 'contrastive', cohort, layer, neuron
LIMIT 12
