-- Which neurons predict a token (with or without its leading space), strongest first, every layer.
-- Parameters: $model_id, $token, $limit.
SELECT layer, neuron, token, round(score, 3) AS score, round(zscore, 2) AS zscore, selected, layer_rank, role
FROM neurons
WHERE model_id = $model_id AND (token = $token OR trim(token) = trim($token))
ORDER BY score DESC
LIMIT $limit;
