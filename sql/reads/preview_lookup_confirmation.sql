-- Asset metadata of lookup_interventions: the share of pairs confirmed, per cohort.
SELECT cohort, pairs_tested, pairs_confirmed, round(share_confirmed, 3) AS share_confirmed,
       round(median_act_drop_lookup, 4) AS median_act_drop_lookup, round(median_act_drop_control, 4) AS median_act_drop_control
FROM lookup_confirmation
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY cohort
