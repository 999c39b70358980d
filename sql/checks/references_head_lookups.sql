-- Referential integrity (asset check lookups_identity): every look-up row is of a stored attribution (a head on
-- one of its neuron's exemplars) of a consistent pair.
-- Parameters: $model_id, $prompt_set_id. One row per (pair, prompt); every boolean column must be true.
SELECT l.model_id, l.prompt_set_id, l.layer, l.neuron, l.head_layer, l.head, l.doc_id,
       bool_and(a.doc_id IS NOT NULL) AS attribution_found,
       bool_and(coalesce(s.consistent, false)) AS pair_consistent
FROM head_lookups l
LEFT JOIN head_attributions a
       ON a.model_id = l.model_id AND a.prompt_set_id = l.prompt_set_id AND a.layer = l.layer AND a.neuron = l.neuron
      AND a.doc_id = l.doc_id AND a.head_layer = l.head_layer AND a.head = l.head
LEFT JOIN head_neuron_scores s
       ON s.model_id = l.model_id AND s.prompt_set_id = l.prompt_set_id AND s.layer = l.layer AND s.neuron = l.neuron
      AND s.head_layer = l.head_layer AND s.head = l.head
WHERE l.model_id = $model_id AND l.prompt_set_id = $prompt_set_id
GROUP BY ALL
ORDER BY l.layer, l.neuron, l.head_layer, l.head, l.doc_id;
