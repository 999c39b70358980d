-- Referential integrity (asset check interventions_valid): every intervention replaces a position of a stored
-- look-up (the pair on that prompt).
-- Parameters: $model_id, $prompt_set_id. One row per (pair, prompt, site); every boolean column must be true.
SELECT i.model_id, i.prompt_set_id, i.layer, i.neuron, i.head_layer, i.head, i.doc_id, i.site,
       l.position IS NOT NULL AS lookup_found
FROM lookup_interventions i
LEFT JOIN head_lookups l
       ON l.model_id = i.model_id AND l.prompt_set_id = i.prompt_set_id AND l.layer = i.layer AND l.neuron = i.neuron
      AND l.head_layer = i.head_layer AND l.head = i.head AND l.doc_id = i.doc_id AND l.position = i.position
WHERE i.model_id = $model_id AND i.prompt_set_id = $prompt_set_id
ORDER BY i.layer, i.neuron, i.head_layer, i.head, i.doc_id, i.site;
