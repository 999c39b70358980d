-- Each tested pair's looked-up edges: on its active prompts, the $positions positions its head reads most (BOS
-- excluded), ranked, with the prompt's tokens. $pairs: 'layer:neuron:head_layer:head' keys, unless $all_pairs.
SELECT l.cohort, l.layer, l.neuron, l.head_layer, l.head, l.doc_id, l.split, l.active, l.position,
       row_number() OVER (PARTITION BY l.layer, l.neuron, l.head_layer, l.head, l.doc_id ORDER BY l.contribution DESC, l.position) AS lookup_rank,
       e.prompt_token_ids
FROM head_lookups l
JOIN neuron_exemplars e USING (model_id, prompt_set_id, layer, neuron, doc_id)
WHERE l.model_id = $model_id AND l.prompt_set_id = $prompt_set_id AND l.active AND l.position > 0
  AND ($all_pairs OR list_contains($pairs, concat_ws(':', l.layer, l.neuron, l.head_layer, l.head)))
QUALIFY lookup_rank <= $positions
ORDER BY l.layer, l.neuron, l.head_layer, l.head, l.doc_id, lookup_rank
