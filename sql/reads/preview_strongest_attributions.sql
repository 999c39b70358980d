-- Asset metadata of head_attributions: the strongest (neuron, head) mean scores on explain prompts.
SELECT layer, neuron, head_layer, head, round(avg(score), 4) AS mean_score, round(avg(active::INT), 2) AS active_share
FROM head_attributions
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id AND split = 'explain'
GROUP BY ALL
ORDER BY mean_score DESC
LIMIT 10
