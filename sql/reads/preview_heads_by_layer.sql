-- Asset metadata of head_neuron_scores: head layers with consistent pairs.
SELECT head_layer, consistent_pairs, heads_with_consistent_pairs, candidate_pairs
FROM heads_by_layer
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id AND consistent_pairs > 0
ORDER BY head_layer
