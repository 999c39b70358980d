-- Asset metadata of neuron_exemplars: the most activating top exemplars.
SELECT layer, neuron, next_token, split, rank, round(act_ratio, 2) AS ratio, prompt_text
FROM neuron_exemplars
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id AND rank = 1
ORDER BY doc_max_act DESC
LIMIT 8
