-- Each consistent pair's active prompts with the position its head reads most (BOS excluded) and the neuron's
-- token: what the counterfactual test replaces and the knockout blocks. The exemplar's place in its document (the
-- knockout's untruncated window) and the neuron's consistent heads of the pair's layer (never a control head).
-- $pairs: 'layer:neuron:head_layer:head' keys, unless $all_pairs.
SELECT l.cohort, l.layer, l.neuron, l.head_layer, l.head, l.doc_id, l.split, l.position AS lookup_position,
       e.prompt_token_ids, e.next_token_id, e.window_start, e.prompt_start, e.doc_max_pos,
       (SELECT list(s.head ORDER BY s.head) FROM head_neuron_scores s
        WHERE s.model_id = l.model_id AND s.prompt_set_id = l.prompt_set_id AND s.layer = l.layer AND s.neuron = l.neuron
          AND s.head_layer = l.head_layer AND s.consistent) AS consistent_heads
FROM head_lookups l
JOIN neuron_exemplars e USING (model_id, prompt_set_id, layer, neuron, doc_id)
WHERE l.model_id = $model_id AND l.prompt_set_id = $prompt_set_id AND l.active AND l.position > 0
  AND ($all_pairs OR list_contains($pairs, concat_ws(':', l.layer, l.neuron, l.head_layer, l.head)))
QUALIFY row_number() OVER (PARTITION BY l.layer, l.neuron, l.head_layer, l.head, l.doc_id ORDER BY l.contribution DESC, l.position) = 1
ORDER BY l.layer, l.neuron, l.head_layer, l.head, l.doc_id
