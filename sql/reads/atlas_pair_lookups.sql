-- The atlas: each consistent pair's look-up summary and, where it was tested, its counterfactual test, its attention
-- knockout (truncated prompts and untruncated windows) and why its head looks there (QK attribution).
SELECT p.layer, p.neuron, p.head_layer, p.head, p.n_active_prompts, p.top_tokens, p.concentration, p.median_distance,
       p.copying, p.previous_token, p.reads_bos, t.n_prompts AS tested_prompts, t.mean_act_drop_lookup, t.mean_act_drop_control,
       t.mean_score_drop_share_lookup, t.mean_score_drop_share_control, t.p_value, t.q_value, t.confirmed,
       k.n_prompts AS knockout_prompts, k.mean_act_drop_lookup AS knockout_act_drop, k.mean_score_drop_share_lookup AS knockout_score_drop_share,
       k.mean_act_drop_control_position AS knockout_act_drop_position, k.mean_act_drop_control_head AS knockout_act_drop_head,
       k.q_value_position AS knockout_q_position, k.q_value_head AS knockout_q_head, k.confirmed AS knockout_confirmed,
       u.n_prompts AS untruncated_prompts, u.mean_act_drop_lookup AS untruncated_act_drop, u.confirmed AS untruncated_confirmed,
       w.n_edges AS qk_edges, w.key_components, w.key_component_edges, w.query_components, w.query_component_edges, w.lexical,
       w.median_lexical_share, w.median_margin
FROM pair_lookups p
LEFT JOIN lookup_tests t USING (model_id, prompt_set_id, cohort, layer, neuron, head_layer, head)
LEFT JOIN knockout_tests k ON k.model_id = p.model_id AND k.prompt_set_id = p.prompt_set_id AND k.layer = p.layer AND k.neuron = p.neuron
      AND k.head_layer = p.head_layer AND k.head = p.head AND k.prompt_kind = 'truncated'
LEFT JOIN knockout_tests u ON u.model_id = p.model_id AND u.prompt_set_id = p.prompt_set_id AND u.layer = p.layer AND u.neuron = p.neuron
      AND u.head_layer = p.head_layer AND u.head = p.head AND u.prompt_kind = 'untruncated'
LEFT JOIN pair_qk w ON w.model_id = p.model_id AND w.prompt_set_id = p.prompt_set_id AND w.layer = p.layer AND w.neuron = p.neuron
      AND w.head_layer = p.head_layer AND w.head = p.head
WHERE p.model_id = $model_id AND p.prompt_set_id = $prompt_set_id
