-- The atlas: each consistent pair's look-up summary and, where it was tested, its counterfactual test.
SELECT p.layer, p.neuron, p.head_layer, p.head, p.n_active_prompts, p.top_tokens, p.concentration, p.median_distance,
       p.copying, p.previous_token, p.reads_bos, t.n_prompts AS tested_prompts, t.mean_act_drop_lookup, t.mean_act_drop_control,
       t.mean_score_drop_share_lookup, t.mean_score_drop_share_control, t.p_value, t.q_value, t.confirmed
FROM pair_lookups p
LEFT JOIN lookup_tests t USING (model_id, prompt_set_id, cohort, layer, neuron, head_layer, head)
WHERE p.model_id = $model_id AND p.prompt_set_id = $prompt_set_id
