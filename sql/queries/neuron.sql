-- One neuron: its exemplars (both splits) with the heads active on each, strongest first.
-- Parameters: $model_id, $prompt_set_id, $layer, $neuron.
SELECT
    e.split, e.rank, round(e.prompt_act, 3) AS act, round(e.act_ratio, 2) AS ratio,
    string_agg('L' || a.head_layer || 'H' || a.head, ' ' ORDER BY a.score DESC) FILTER (WHERE a.active) AS active_heads,
    right(replace(e.prompt_text, chr(10), ' '), 60) AS prompt_ends, e.next_token
FROM neuron_exemplars e
LEFT JOIN head_attributions a USING (model_id, prompt_set_id, layer, neuron, doc_id)
WHERE e.model_id = $model_id AND e.prompt_set_id = $prompt_set_id AND e.layer = $layer AND e.neuron = $neuron
GROUP BY e.split, e.rank, e.prompt_act, e.act_ratio, e.prompt_text, e.next_token
ORDER BY e.split, e.rank;
