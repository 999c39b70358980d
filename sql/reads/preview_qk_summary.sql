-- Asset metadata of qk_attributions: per cohort, the share of lexical look-ups and the most frequent components.
SELECT cohort, pairs, edges, round(lexical_edges_share, 3) AS lexical_edges_share, most_frequent_query_component,
       most_frequent_key_component, identity_max_rel_error
FROM qk_summary
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
ORDER BY cohort
