-- The neurons whose exemplars are found: the selected next-token neurons and the random baseline neurons.
SELECT layer, neuron, token_id, token
FROM neurons
WHERE model_id = $model_id AND (selected OR random_baseline)
ORDER BY layer, neuron
