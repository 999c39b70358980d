-- Which next-token neurons a context token switches on, and through which heads: the consistent pairs whose head
-- reads the token most (rank 1) on at least one active prompt, by the token's total contribution, with the
-- neuron's token and whether the counterfactual test confirmed the look-up (NULL: not tested).
-- E.g. which neurons does ' Paris' in the context switch on. The token matches with or without its leading space.
-- Parameters: $model_id, $prompt_set_id, $context_token, $limit.
SELECT l.cohort, l.layer, l.neuron, n.token AS neuron_token, l.head_layer, l.head,
       count(DISTINCT l.doc_id) FILTER (WHERE l.rank = 1) AS prompts_read_most,
       count(DISTINCT l.doc_id)                            AS active_prompts_with_token,
       round(sum(l.contribution), 4)                       AS total_contribution,
       any_value(t.confirmed)                              AS confirmed,
       any_value(round(t.q_value, 4))                      AS q_value
FROM head_lookups l
JOIN neurons n USING (model_id, layer, neuron)
LEFT JOIN lookup_tests t USING (model_id, prompt_set_id, layer, neuron, head_layer, head)
WHERE l.model_id = $model_id AND l.prompt_set_id = $prompt_set_id AND l.active
  AND (l.token = $context_token OR trim(l.token) = trim($context_token))
GROUP BY l.cohort, l.layer, l.neuron, n.token, l.head_layer, l.head
HAVING count(*) FILTER (WHERE l.rank = 1) > 0
ORDER BY total_contribution DESC
LIMIT $limit;
