-- Several models side by side: consistent (neuron, head) pairs by the head's relative depth (head layer / the model's
-- layers, in tenths), every model and prompt set. No parameters.
SELECT depth_from, model_id, prompt_set_id, n_layers, consistent_pairs, heads, round(mean_depth, 3) AS mean_depth
FROM heads_by_relative_depth
ORDER BY depth_from, model_id, prompt_set_id;
