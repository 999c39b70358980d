-- Asset metadata of lookup_knockouts: the share of pairs confirmed per cohort and prompt kind, beside the substitution test's.
SELECT cohort, prompt_kind, pairs_tested, pairs_confirmed, round(share_confirmed, 3) AS share_confirmed,
       round(substitution_share_confirmed, 3) AS substitution_share_confirmed,
       round(median_act_drop_lookup, 4) AS median_act_drop_lookup, round(median_act_drop_control_position, 4) AS median_act_drop_control_position,
       round(median_act_drop_control_head, 4) AS median_act_drop_control_head
FROM knockout_confirmation
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY cohort, prompt_kind DESC
