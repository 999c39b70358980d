-- The pairs the explanations step explained (the contrastive reference explains every one of them).
SELECT DISTINCT cohort, layer, neuron, head_layer, head
FROM explanations
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY cohort, layer, neuron, head_layer, head
