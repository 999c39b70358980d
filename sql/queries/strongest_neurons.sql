-- The strongest selected next-token neurons of a model ($1), with their exemplar counts in a prompt set
-- ($2) and the top prompt; $3 rows.
SELECT
    n.layer, n.neuron, n.token, round(n.score, 2) AS score, round(n.zscore, 1) AS zscore,
    count(e.doc_id) AS exemplars,
    -- the prompt's end matters: the neuron fires on its last token and predicts `token` next
    right(replace(arg_max(e.prompt_text, e.doc_max_act), chr(10), ' '), 50) AS top_prompt_ends
FROM neurons n
LEFT JOIN neuron_exemplars e
    ON e.model_id = n.model_id AND e.layer = n.layer AND e.neuron = n.neuron AND e.prompt_set_id = $2
WHERE n.model_id = $1 AND n.selected
GROUP BY n.layer, n.neuron, n.token, n.score, n.zscore
ORDER BY n.score DESC
LIMIT $3;
