-- Every consistent pair of both cohorts on each of its neuron's prompts (both splits), with the head's stored
-- attribution: what the look-up step splits by source position.
SELECT s.cohort, a.layer, a.neuron, a.head_layer, a.head, a.doc_id, a.split, a.active,
       a.score, a.in_contribution, a.gate_contribution, e.prompt_token_ids
FROM head_neuron_scores s
JOIN head_attributions a USING (model_id, prompt_set_id, layer, neuron, head_layer, head)
JOIN neuron_exemplars e USING (model_id, prompt_set_id, layer, neuron, doc_id)
WHERE s.model_id = $model_id AND s.prompt_set_id = $prompt_set_id AND s.consistent
ORDER BY a.layer, a.neuron, a.head_layer, a.head, a.doc_id
