-- Asset metadata of head_ablations: active vs inactive prompts, KS test.
SELECT metric, n_active, n_inactive, round(mean_active, 4) AS mean_active, round(mean_inactive, 4) AS mean_inactive,
       round(ks_statistic, 3) AS ks, p_value
FROM ablation_comparison
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
