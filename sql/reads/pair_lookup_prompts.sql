-- The given pairs' prompts ('layer:neuron:head_layer:head'), both splits, as the head reads them: the prompt's
-- tokens (each decoded on its own, BOS left out) and the position it reads most (rank 1; 0 = BOS).
SELECT layer, neuron, head_layer, head, doc_id, split, active,
       list(token ORDER BY position) FILTER (WHERE position > 0) AS pieces,
       any_value(position) FILTER (WHERE rank = 1) AS top_position,
       any_value(token) FILTER (WHERE rank = 1) AS top_token
FROM head_lookups
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
  AND list_contains($pairs, concat_ws(':', layer, neuron, head_layer, head))
GROUP BY ALL
ORDER BY layer, neuron, head_layer, head, doc_id
