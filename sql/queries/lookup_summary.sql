-- The look-ups of a model and prompt set, per cohort: the share of tested pairs whose look-up the counterfactual
-- test confirmed, the median concentration, the share of pairs flagged copying / previous-token / BOS, and the
-- context tokens (BOS aside) the heads read most on active prompts.
-- Parameters: $model_id, $prompt_set_id.
WITH reading AS (
    SELECT cohort, count(*) AS pairs, median(concentration) AS median_concentration,
           avg(copying::INTEGER) AS copying_share, avg(previous_token::INTEGER) AS previous_token_share, avg(reads_bos::INTEGER) AS bos_share
    FROM pair_lookups
    WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id
    GROUP BY cohort
), read_most AS (
    SELECT cohort, list(token ORDER BY n DESC, token)[1:8] AS most_read_tokens
    FROM (SELECT cohort, token, count(*) AS n FROM head_lookups
          WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id AND active AND rank = 1 AND position > 0
          GROUP BY cohort, token)
    GROUP BY cohort
)
SELECT r.cohort, r.pairs, c.pairs_tested, c.pairs_confirmed, c.share_confirmed, r.median_concentration,
       r.copying_share, r.previous_token_share, r.bos_share, m.most_read_tokens
FROM reading r
LEFT JOIN lookup_confirmation c ON c.model_id = $model_id AND c.prompt_set_id = $prompt_set_id AND c.cohort = r.cohort
LEFT JOIN read_most m ON m.cohort = r.cohort
ORDER BY r.cohort;
