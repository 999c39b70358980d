-- Each consistent next-token pair's prompts of the chosen splits, with the head's active flag: what is ablated.
SELECT a.layer, a.neuron, a.doc_id, a.split, a.head_layer, a.head, a.active, e.prompt_token_ids, e.next_token_id
FROM head_neuron_scores s
JOIN head_attributions a USING (model_id, prompt_set_id, layer, neuron, head_layer, head)
JOIN neuron_exemplars e USING (model_id, prompt_set_id, layer, neuron, doc_id)
WHERE s.model_id = $model_id AND s.prompt_set_id = $prompt_set_id AND s.consistent AND s.cohort = 'next_token'
  AND list_contains($splits, a.split)
ORDER BY a.layer, a.neuron, a.head_layer, a.head, a.doc_id
