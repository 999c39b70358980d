-- The atlas: every exemplar's prompt.
SELECT layer, neuron, doc_id, split, rank, prompt_token_ids, prompt_act, next_token
FROM neuron_exemplars
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY layer, neuron, split, rank
