-- Every consistent pair of both cohorts with its neuron's token: the candidates for explanation.
SELECT s.cohort, s.layer, s.neuron, s.head_layer, s.head, s.mean_score, n.token
FROM head_neuron_scores s
JOIN neurons n USING (model_id, layer, neuron)
WHERE s.model_id = $model_id AND s.prompt_set_id = $prompt_set_id AND s.consistent
