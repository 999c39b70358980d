-- Neuron roles (Gurnee et al. 2024) per layer: selected next-token neurons that predict (heavy-tailed congruence with the
-- vocabulary, positive skew) or suppress (negative skew), and the same over every neuron. Parameters: $model_id.
SELECT layer, selected, selected_prediction, selected_suppression, selected_other,
       round(median_kurtosis_selected, 2) AS median_kurtosis_selected, neurons, prediction, suppression,
       round(median_kurtosis, 2) AS median_kurtosis
FROM neuron_roles
WHERE model_id = $model_id
ORDER BY layer;
