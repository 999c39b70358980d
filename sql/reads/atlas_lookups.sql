-- The atlas: what each consistent pair's head reads on the neuron's explain prompts, per source position
-- (BOS = position 0): attention, signed contribution, rank.
SELECT layer, neuron, head_layer, head, doc_id, position, token, attention, contribution, rank
FROM head_lookups
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id AND split = 'explain'
ORDER BY layer, neuron, head_layer, head, doc_id, position
