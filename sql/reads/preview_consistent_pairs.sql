-- Asset metadata of head_neuron_scores: the strongest consistent pairs.
SELECT layer, neuron, token, head_layer, head, rank, round(mean_score, 4) AS mean_score, round(active_fraction, 2) AS active
FROM consistent_pairs
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY mean_score DESC
LIMIT 10
