-- What a head reads for a neuron: on the pair's active prompts, each context token by its total contribution to
-- the neuron, how often it is the position the head reads most, its mean attention and share of the head's score.
-- Parameters: $model_id, $prompt_set_id, $layer, $neuron, $head_layer, $head, $limit.
SELECT token, token_id,
       count(DISTINCT doc_id)                        AS prompts_with_token,
       count(*) FILTER (WHERE rank = 1)              AS prompts_read_most,
       round(sum(contribution), 4)                   AS total_contribution,
       round(avg(attention), 4)                      AS mean_attention,
       round(avg(share), 4)                          AS mean_share,
       round(median(distance), 1)                    AS median_distance
FROM head_lookups
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id AND active
  AND layer = $layer AND neuron = $neuron AND head_layer = $head_layer AND head = $head
GROUP BY token, token_id
ORDER BY total_contribution DESC
LIMIT $limit;
