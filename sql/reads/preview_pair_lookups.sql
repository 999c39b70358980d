-- Asset metadata of head_lookups: what the strongest pairs' heads read most.
SELECT p.cohort, p.layer, p.neuron, p.neuron_token, p.head_layer, p.head, p.n_active_prompts, p.top_tokens,
       round(p.concentration, 3) AS concentration, p.median_distance, p.copying, p.previous_token, p.reads_bos
FROM pair_lookups p
JOIN head_neuron_scores s USING (model_id, prompt_set_id, layer, neuron, head_layer, head)
WHERE p.model_id = $model_id AND p.prompt_set_id = $prompt_set_id
ORDER BY p.cohort, s.mean_score DESC
LIMIT 10
