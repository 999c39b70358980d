-- Why a head looks where it does, across every neuron it drives (QK attribution): on the tested pairs' active prompts,
-- which query-side components (at the last position) make it look up which tokens, by how many edges and neurons,
-- and how much of the score they carry; with the key side's most frequent component for that token.
-- Parameters: $model_id, $prompt_set_id, $head_layer, $head, $limit.
WITH edges AS (
    SELECT q.layer, q.neuron, q.doc_id, q.position, any_value(q.score) AS score,
           any_value(q.component) FILTER (WHERE q.side = 'query' AND q.rank = 1) AS query_component,
           any_value(q.share) FILTER (WHERE q.side = 'query' AND q.rank = 1) AS query_share,
           any_value(q.component) FILTER (WHERE q.side = 'key' AND q.rank = 1) AS key_component
    FROM qk_attributions q
    WHERE q.model_id = $model_id AND q.prompt_set_id = $prompt_set_id AND q.head_layer = $head_layer AND q.head = $head AND q.active
    GROUP BY ALL
)
SELECT e.query_component, l.token AS looked_up_token,
       count(*) AS edges,
       count(DISTINCT (e.layer, e.neuron)) AS neurons,
       round(avg(e.query_share), 4) AS mean_query_share,
       round(avg(e.score), 4) AS mean_score,
       mode(e.key_component) AS usual_key_component
FROM edges e
JOIN head_lookups l
  ON l.model_id = $model_id AND l.prompt_set_id = $prompt_set_id AND l.layer = e.layer AND l.neuron = e.neuron
 AND l.head_layer = $head_layer AND l.head = $head AND l.doc_id = e.doc_id AND l.position = e.position
GROUP BY ALL
ORDER BY edges DESC, mean_query_share DESC, looked_up_token
LIMIT $limit;
