-- Referential integrity (asset check neurons_valid): every neuron of the model belongs to a recorded model.
-- Parameters: $model_id. One row per neuron; every boolean column must be true (see pipeline/quality.py).
SELECT n.model_id, n.layer, n.neuron,
       m.model_id IS NOT NULL AS model_found
FROM neurons n
LEFT JOIN models m ON m.model_id = n.model_id
WHERE n.model_id = $model_id
ORDER BY n.layer, n.neuron;
