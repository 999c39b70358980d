-- Referential integrity (asset check qk_identity): every decomposed edge is a stored look-up position of its pair on
-- that prompt. Parameters: $model_id, $prompt_set_id. One row per edge; every boolean column must be true.
SELECT q.model_id, q.prompt_set_id, q.layer, q.neuron, q.head_layer, q.head, q.doc_id, q.position,
       bool_and(l.position IS NOT NULL) AS lookup_found
FROM qk_attributions q
LEFT JOIN head_lookups l
       ON l.model_id = q.model_id AND l.prompt_set_id = q.prompt_set_id AND l.layer = q.layer AND l.neuron = q.neuron
      AND l.head_layer = q.head_layer AND l.head = q.head AND l.doc_id = q.doc_id AND l.position = q.position
WHERE q.model_id = $model_id AND q.prompt_set_id = $prompt_set_id
GROUP BY ALL
ORDER BY q.layer, q.neuron, q.head_layer, q.head, q.doc_id, q.position;
