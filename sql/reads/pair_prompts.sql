-- The prompts of the given pairs ('layer:neuron:head_layer:head'), both splits, with the head's active flag and score.
SELECT a.layer, a.neuron, a.head_layer, a.head, a.doc_id, a.split, a.active, a.score, e.rank, e.prompt_text
FROM head_attributions a
JOIN neuron_exemplars e USING (model_id, prompt_set_id, layer, neuron, doc_id)
WHERE a.model_id = $model_id AND a.prompt_set_id = $prompt_set_id
  AND list_contains($pairs, concat_ws(':', a.layer, a.neuron, a.head_layer, a.head))
