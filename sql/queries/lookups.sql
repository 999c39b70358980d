-- Every tested pair's look-up: what its head reads most, how concentrated, the flags, and the counterfactual
-- test (drops at the looked-up position and the control, q-value, confirmed), strongest drop first.
-- Parameters: $model_id, $prompt_set_id, $limit.
SELECT p.cohort, p.layer, p.neuron, p.neuron_token, p.head_layer, p.head, p.top_tokens, round(p.concentration, 3) AS concentration,
       p.median_distance, p.copying, p.previous_token, p.reads_bos, t.n_prompts,
       round(t.mean_act_drop_lookup, 4) AS act_drop_lookup, round(t.mean_act_drop_control, 4) AS act_drop_control,
       round(t.q_value, 4) AS q_value, t.confirmed
FROM pair_lookups p
LEFT JOIN lookup_tests t USING (model_id, prompt_set_id, cohort, layer, neuron, head_layer, head)
WHERE p.model_id = $model_id AND p.prompt_set_id = $prompt_set_id
ORDER BY t.mean_act_drop_lookup - t.mean_act_drop_control DESC NULLS LAST
LIMIT $limit;
