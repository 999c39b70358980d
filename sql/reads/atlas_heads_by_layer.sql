-- The atlas: consistent pairs per head layer.
SELECT * FROM heads_by_layer
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY head_layer
