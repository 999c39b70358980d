-- Asset metadata of neuron_catalog: the ten strongest selected neurons.
SELECT layer, neuron, token, round(score, 3) AS score, round(zscore, 2) AS zscore
FROM neurons
WHERE model_id = $model_id AND selected
ORDER BY score DESC
LIMIT 10
