-- Referential integrity (asset check knockouts_valid): every knockout of a truncated prompt blocks a position of a
-- stored look-up (the pair on that prompt); every untruncated window's knockout has the truncated prompt's look-up knockout.
-- Parameters: $model_id, $prompt_set_id. One row per (pair, prompt, prompt_kind, site); every boolean column must be true.
SELECT k.model_id, k.prompt_set_id, k.layer, k.neuron, k.head_layer, k.head, k.doc_id, k.prompt_kind, k.site,
       CASE WHEN k.prompt_kind = 'truncated' THEN l.position IS NOT NULL ELSE t.site IS NOT NULL END AS lookup_found
FROM lookup_knockouts k
LEFT JOIN head_lookups l
       ON k.prompt_kind = 'truncated' AND l.model_id = k.model_id AND l.prompt_set_id = k.prompt_set_id AND l.layer = k.layer
      AND l.neuron = k.neuron AND l.head_layer = k.head_layer AND l.head = k.head AND l.doc_id = k.doc_id AND l.position = k.position
LEFT JOIN lookup_knockouts t
       ON k.prompt_kind = 'untruncated' AND t.prompt_kind = 'truncated' AND t.model_id = k.model_id AND t.prompt_set_id = k.prompt_set_id
      AND t.layer = k.layer AND t.neuron = k.neuron AND t.head_layer = k.head_layer AND t.head = k.head AND t.doc_id = k.doc_id
      AND t.site = 'lookup'
WHERE k.model_id = $model_id AND k.prompt_set_id = $prompt_set_id
ORDER BY k.layer, k.neuron, k.head_layer, k.head, k.doc_id, k.prompt_kind, k.site;
