-- The atlas: the selected neurons and their tokens.
SELECT layer, neuron, token, score, zscore
FROM neurons
WHERE model_id = $model_id AND selected
ORDER BY layer, neuron
