-- Referential integrity (asset check exemplars_valid): every exemplar is of a catalogued neuron that was
-- selected or drawn as a random baseline, and of a document of its prompt set.
-- Parameters: $model_id, $prompt_set_id. One row per exemplar; every boolean column must be true.
SELECT e.model_id, e.prompt_set_id, e.layer, e.neuron, e.doc_id,
       n.neuron IS NOT NULL AS neuron_found,
       coalesce(n.selected OR n.random_baseline, false) AS neuron_chosen,
       d.doc_id IS NOT NULL AS document_found
FROM neuron_exemplars e
LEFT JOIN neurons n ON n.model_id = e.model_id AND n.layer = e.layer AND n.neuron = e.neuron
LEFT JOIN documents d ON d.prompt_set_id = e.prompt_set_id AND d.doc_id = e.doc_id
WHERE e.model_id = $model_id AND e.prompt_set_id = $prompt_set_id
ORDER BY e.layer, e.neuron, e.doc_id;
