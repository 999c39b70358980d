-- The strongest consistent (neuron, head) pairs: which head switches on which next-token neuron, on what
-- share of its prompts, and what zero-ablating it does. Parameters: $model_id, $prompt_set_id, $limit.
SELECT
    c.layer, c.neuron, c.token, 'L' || c.head_layer || 'H' || c.head AS head, c.rank,
    round(c.mean_score, 3) AS mean_score, round(c.active_fraction, 2) AS active_share,
    round(avg(b.act_drop) FILTER (WHERE b.active), 3) AS ablation_drop_active,
    round(avg(b.act_drop) FILTER (WHERE NOT b.active), 3) AS ablation_drop_inactive
FROM consistent_pairs c
LEFT JOIN head_ablations b USING (model_id, prompt_set_id, layer, neuron, head_layer, head)
WHERE c.model_id = $model_id AND c.prompt_set_id = $prompt_set_id
GROUP BY c.layer, c.neuron, c.token, c.head_layer, c.head, c.rank, c.mean_score, c.active_fraction
ORDER BY c.mean_score DESC
LIMIT $limit;
