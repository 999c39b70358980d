-- The random baseline neurons of a model.
SELECT layer, neuron
FROM neurons
WHERE model_id = $model_id AND random_baseline
