-- Every (exemplar, head) score and active flag, for the per-pair scores.
SELECT layer, neuron, split, head_layer, head, gate_contribution, in_contribution, score, active
FROM head_attributions
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
