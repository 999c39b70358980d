-- Why the heads look where they do, per cohort of a model and prompt set: the attention knockout's share of tested
-- pairs confirmed (truncated prompts and untruncated windows) beside the substitution test's on the same pairs, and
-- the QK attribution's share of lexical look-ups with the most frequent query-side and key-side components.
-- Parameters: $model_id, $prompt_set_id.
WITH cohorts AS (
    SELECT DISTINCT cohort FROM knockout_tests WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
    UNION
    SELECT DISTINCT cohort FROM qk_attributions WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
)
SELECT c.cohort,
       t.pairs_tested AS knockout_pairs_tested, t.pairs_confirmed AS knockout_pairs_confirmed, t.share_confirmed AS knockout_share_confirmed,
       t.substitution_share_confirmed,
       u.pairs_tested AS untruncated_pairs_tested, u.pairs_confirmed AS untruncated_pairs_confirmed, u.share_confirmed AS untruncated_share_confirmed,
       q.edges AS qk_edges, q.lexical_edges_share, q.most_frequent_query_component, q.most_frequent_key_component, q.identity_max_rel_error
FROM cohorts c
LEFT JOIN knockout_confirmation t ON t.model_id = $model_id AND t.prompt_set_id = $prompt_set_id AND t.cohort = c.cohort AND t.prompt_kind = 'truncated'
LEFT JOIN knockout_confirmation u ON u.model_id = $model_id AND u.prompt_set_id = $prompt_set_id AND u.cohort = c.cohort AND u.prompt_kind = 'untruncated'
LEFT JOIN qk_summary q ON q.model_id = $model_id AND q.prompt_set_id = $prompt_set_id AND q.cohort = c.cohort
ORDER BY c.cohort;
