-- A partition's exemplars without their prompts (the exemplar suite checks the numbers, not the text).
SELECT * EXCLUDE (prompt_token_ids, prompt_text)
FROM neuron_exemplars
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
