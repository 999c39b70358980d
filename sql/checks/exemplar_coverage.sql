-- Per selected neuron, how many exemplars the partition found.
SELECT n.layer, n.neuron, count(e.doc_id) AS n_exemplars
FROM neurons n
LEFT JOIN neuron_exemplars e
  ON e.model_id = n.model_id AND e.layer = n.layer AND e.neuron = n.neuron AND e.prompt_set_id = $prompt_set_id
WHERE n.model_id = $model_id AND n.selected
GROUP BY n.layer, n.neuron
