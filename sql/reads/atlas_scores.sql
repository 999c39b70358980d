-- The atlas: every next-token (neuron, head) score.
SELECT * FROM head_neuron_scores
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id AND cohort = 'next_token'
