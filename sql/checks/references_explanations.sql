-- Referential integrity (asset check explanations_valid): every explanation of the run's explainers is of a
-- recorded (neuron, head) pair that is consistent, in the pair's cohort. (Explanations of explainers not run
-- this time may predate the current scores, so they are left out.)
-- Parameters: $model_id, $prompt_set_id, $explainers (a list). One row per explanation; every boolean column must be true.
SELECT x.explanation_id, x.explainer, x.model_id, x.prompt_set_id, x.layer, x.neuron, x.head_layer, x.head,
       s.head IS NOT NULL AS pair_found,
       coalesce(s.consistent, false) AS pair_consistent,
       coalesce(s.cohort = x.cohort, false) AS cohort_matches
FROM explanations x
LEFT JOIN head_neuron_scores s
       ON s.model_id = x.model_id AND s.prompt_set_id = x.prompt_set_id AND s.layer = x.layer AND s.neuron = x.neuron
      AND s.head_layer = x.head_layer AND s.head = x.head
WHERE x.model_id = $model_id AND x.prompt_set_id = $prompt_set_id AND list_contains($explainers, x.explainer)
ORDER BY x.explainer, x.layer, x.neuron, x.head_layer, x.head;
