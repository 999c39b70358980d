-- Referential integrity (asset check head_scores_valid): every (neuron, head) score is of a catalogued neuron
-- that was selected or drawn as a random baseline.
-- Parameters: $model_id, $prompt_set_id. One row per (neuron, head); every boolean column must be true.
SELECT s.model_id, s.prompt_set_id, s.layer, s.neuron, s.head_layer, s.head,
       n.neuron IS NOT NULL AS neuron_found,
       coalesce(n.selected OR n.random_baseline, false) AS neuron_chosen
FROM head_neuron_scores s
LEFT JOIN neurons n ON n.model_id = s.model_id AND n.layer = s.layer AND n.neuron = s.neuron
WHERE s.model_id = $model_id AND s.prompt_set_id = $prompt_set_id
ORDER BY s.layer, s.neuron, s.head_layer, s.head;
