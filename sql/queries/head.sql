-- One head: every neuron it is consistently active for, with the neuron's token and the ablation effect.
-- Parameters: $model_id, $prompt_set_id, $head_layer, $head.
SELECT
    c.layer, c.neuron, c.token, c.rank, round(c.mean_score, 3) AS mean_score, round(c.active_fraction, 2) AS active_share,
    round(avg(b.act_drop) FILTER (WHERE b.active), 3) AS ablation_drop_active,
    round(avg(b.act_drop) FILTER (WHERE NOT b.active), 3) AS ablation_drop_inactive
FROM consistent_pairs c
LEFT JOIN head_ablations b USING (model_id, prompt_set_id, layer, neuron, head_layer, head)
WHERE c.model_id = $model_id AND c.prompt_set_id = $prompt_set_id AND c.head_layer = $head_layer AND c.head = $head
GROUP BY c.layer, c.neuron, c.token, c.rank, c.mean_score, c.active_fraction
ORDER BY c.mean_score DESC;
