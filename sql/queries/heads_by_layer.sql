-- Where the look-up heads lie (docs/method.md, step 9): consistent pairs per head layer. Parameters: $model_id, $prompt_set_id.
SELECT head_layer, consistent_pairs, heads_with_consistent_pairs, candidate_pairs
FROM heads_by_layer
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY head_layer;
