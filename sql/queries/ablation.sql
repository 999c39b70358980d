-- The causal check (docs/method.md, step 8): ablation effects on active vs inactive prompts, KS test.
-- Parameters: $model_id, $prompt_set_id.
SELECT metric, n_active, n_inactive, round(mean_active, 4) AS mean_active, round(mean_inactive, 4) AS mean_inactive,
       round(median_active, 4) AS median_active, round(median_inactive, 4) AS median_inactive, round(ks_statistic, 3) AS ks, p_value
FROM ablation_comparison
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id;
