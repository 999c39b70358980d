-- A partition's head attributions, the columns the attribution suite checks.
SELECT model_id, prompt_set_id, layer, neuron, doc_id, head_layer, head, in_contribution, score
FROM head_attributions
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
