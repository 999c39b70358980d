-- Referential integrity (asset check ablations_valid): every ablation is of a recorded (neuron, head) pair that
-- is consistent, on one of the neuron's exemplars.
-- Parameters: $model_id, $prompt_set_id. One row per (pair, prompt); every boolean column must be true.
SELECT a.model_id, a.prompt_set_id, a.layer, a.neuron, a.head_layer, a.head, a.doc_id,
       s.head IS NOT NULL AS pair_found,
       coalesce(s.consistent, false) AS pair_consistent,
       e.doc_id IS NOT NULL AS exemplar_found
FROM head_ablations a
LEFT JOIN head_neuron_scores s
       ON s.model_id = a.model_id AND s.prompt_set_id = a.prompt_set_id AND s.layer = a.layer AND s.neuron = a.neuron
      AND s.head_layer = a.head_layer AND s.head = a.head
LEFT JOIN neuron_exemplars e
       ON e.model_id = a.model_id AND e.prompt_set_id = a.prompt_set_id AND e.layer = a.layer AND e.neuron = a.neuron AND e.doc_id = a.doc_id
WHERE a.model_id = $model_id AND a.prompt_set_id = $prompt_set_id
ORDER BY a.layer, a.neuron, a.head_layer, a.head, a.doc_id;
