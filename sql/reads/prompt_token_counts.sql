-- How often each token occurs in the partition's exemplar prompts (each document's prompt once per neuron):
-- the unigram distribution substitutes are drawn from.
SELECT token_id, count(*) AS n
FROM (SELECT unnest(prompt_token_ids) AS token_id FROM neuron_exemplars WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id)
GROUP BY token_id
ORDER BY token_id
