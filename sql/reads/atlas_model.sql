-- The atlas: the model's row.
SELECT * FROM models WHERE model_id = $model_id
