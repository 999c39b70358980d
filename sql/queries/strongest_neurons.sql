-- The strongest selected next-token neurons of a model, with their exemplar counts in a prompt set and the
-- top prompt. Parameters: $model_id, $prompt_set_id, $limit.
SELECT
    n.layer, n.neuron, n.token, round(n.score, 2) AS score, round(n.zscore, 1) AS zscore, n.role,
    count(e.doc_id) AS exemplars,
    -- the prompt's end matters: the neuron fires on its last token and predicts `token` next
    right(replace(arg_max(e.prompt_text, e.doc_max_act), chr(10), ' '), 50) AS top_prompt_ends
FROM neurons n
LEFT JOIN neuron_exemplars e
    ON e.model_id = n.model_id AND e.layer = n.layer AND e.neuron = n.neuron AND e.prompt_set_id = $prompt_set_id
WHERE n.model_id = $model_id AND n.selected
GROUP BY n.layer, n.neuron, n.token, n.score, n.zscore, n.role
ORDER BY n.score DESC
LIMIT $limit;
