-- The atlas: the consistent next-token pairs' scores and active flags per prompt.
SELECT a.layer, a.neuron, a.doc_id, a.head_layer, a.head, a.score, a.active
FROM head_attributions a
JOIN head_neuron_scores s USING (model_id, prompt_set_id, layer, neuron, head_layer, head)
WHERE a.model_id = $model_id AND a.prompt_set_id = $prompt_set_id AND s.consistent AND s.cohort = 'next_token'
