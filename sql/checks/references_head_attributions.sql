-- Referential integrity (asset check attribution_identity): every head attribution is of a recorded exemplar.
-- Parameters: $model_id, $prompt_set_id. One row per (exemplar, head); every boolean column must be true.
SELECT a.model_id, a.prompt_set_id, a.layer, a.neuron, a.doc_id, a.head_layer, a.head,
       e.doc_id IS NOT NULL AS exemplar_found
FROM head_attributions a
LEFT JOIN neuron_exemplars e
       ON e.model_id = a.model_id AND e.prompt_set_id = a.prompt_set_id AND e.layer = a.layer AND e.neuron = a.neuron AND e.doc_id = a.doc_id
WHERE a.model_id = $model_id AND a.prompt_set_id = $prompt_set_id
ORDER BY a.layer, a.neuron, a.doc_id, a.head_layer, a.head;
