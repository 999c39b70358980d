-- Every exemplar's truncated prompt, for head attribution.
SELECT layer, neuron, doc_id, split, prompt_token_ids
FROM neuron_exemplars
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY layer, neuron, split, rank
