-- The latest model and prompt set in the store: the defaults of `lookups query` for the model and prompt set.
SELECT (SELECT model_id FROM models ORDER BY recorded_at DESC LIMIT 1) AS model_id,
       (SELECT prompt_set_id FROM prompt_sets ORDER BY recorded_at DESC LIMIT 1) AS prompt_set_id
