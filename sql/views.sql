-- Views over the results: the questions users ask, answered in SQL. Applied after schema.sql; idempotent.

-- step 9 of docs/method.md: where the look-up heads lie. Per head layer, how many consistent (neuron, head) pairs.
CREATE OR REPLACE VIEW heads_by_layer AS
SELECT model_id, prompt_set_id, head_layer,
       count(*) FILTER (WHERE consistent)                  AS consistent_pairs,
       count(DISTINCT head) FILTER (WHERE consistent)      AS heads_with_consistent_pairs,
       count(*)                                            AS candidate_pairs
FROM head_neuron_scores
WHERE cohort = 'next_token'
GROUP BY ALL;

-- step 9 of docs/method.md: the ablation comparison per model (the paper's GPT-2 large: KS 0.29, p 2e-23).
CREATE OR REPLACE VIEW ablation_comparison AS
SELECT t.model_id, t.prompt_set_id, t.metric, t.n_active, t.n_inactive,
       t.mean_active, t.mean_inactive, t.median_active, t.median_inactive, t.ks_statistic, t.p_value
FROM ablation_tests t;

-- Each neuron's consistent heads, strongest first, with the neuron's token.
CREATE OR REPLACE VIEW consistent_pairs AS
SELECT s.model_id, s.prompt_set_id, s.layer, s.neuron, n.token, s.head_layer, s.head, s.rank,
       s.mean_score, s.active_fraction, s.n_prompts, s.heldout_n_prompts, s.heldout_active_fraction
FROM head_neuron_scores s
JOIN neurons n USING (model_id, layer, neuron)
WHERE s.consistent AND s.cohort = 'next_token';

-- The strongest qualifying next-token neurons of every layer (the catalog's ranking; `selected` marks the run's set).
CREATE OR REPLACE VIEW strongest_neurons_per_layer AS
SELECT model_id, layer, layer_rank + 1 AS rank_in_layer, neuron, token, score, zscore, selected
FROM neurons
WHERE qualifies;



-- docs/method.md, "Scoring explanations": the distribution of each scorer's measures per model, explainer and what was
-- scored (next-token pairs, the random-neuron baseline, shuffled explanations), computed here in SQL.
CREATE OR REPLACE VIEW explanation_findings AS
SELECT model_id, prompt_set_id, explainer, scorer,
       CASE WHEN baseline = 'shuffled' THEN 'shuffled explanations'
            WHEN cohort = 'random' THEN 'random neurons (baseline)'
            ELSE 'next-token neurons' END          AS scored_on,
       count(*) FILTER (WHERE status = 'scored')   AS n_scored,
       count(*) FILTER (WHERE status <> 'scored')  AS n_not_scored,
       avg(auc)                                    AS mean_auc,
       avg(calibrated_e)                           AS mean_calibrated_e,
       avg(e_score)                                AS mean_e,
       stddev_samp(e_score)                        AS std_e,
       skewness(e_score)                           AS skew_e,
       avg(correlation)                            AS mean_correlation,
       sum(n_malformed)                            AS malformed_answers,
       sum(n_errors)                               AS failed_calls
FROM explanation_scores
GROUP BY ALL;

-- The tests behind the findings, per explainer, scorer and measure: the next-token pairs' mean with its bootstrap 95%
-- CI against each baseline, the difference with its CI and permutation test, Mann-Whitney U and (shuffled) the paired
-- Wilcoxon test. signal: the difference's CI excludes 0 and its permutation p < 0.05; above_chance: the CI of the mean
-- lies above what an explanation that says nothing gets (the paper's GPT-2 large: mean E 0.575 vs 0.558 for random
-- neurons).
CREATE OR REPLACE VIEW explanation_comparison AS
SELECT model_id, prompt_set_id, explainer, scorer, measure, baseline, chance, n, mean, ci_low, ci_high, std, skew, skew_z, skew_p,
       n_baseline, mean_baseline, baseline_ci_low, baseline_ci_high, std_baseline,
       difference, difference_ci_low, difference_ci_high, permutation_p, mw_u, mw_p, n_paired, wilcoxon_w, wilcoxon_p,
       coalesce(difference_ci_low > 0 AND permutation_p < 0.05, false) AS signal,
       coalesce(ci_low > chance, false)                               AS above_chance
FROM explanation_tests;

-- Each explained pair with its explanation and scores (own prompts; E also on another pair's), one row per explainer
-- (next-token and random neurons).
CREATE OR REPLACE VIEW pair_explanations AS
WITH own AS (
    SELECT explanation_id,
           max(e_score)      FILTER (WHERE scorer = 'detection')  AS e_score,
           max(calibrated_e) FILTER (WHERE scorer = 'detection')  AS calibrated_e,
           max(auc)          FILTER (WHERE scorer = 'detection')  AS auc,
           max(auc)          FILTER (WHERE scorer = 'embedding')  AS embedding_auc,
           max(correlation)  FILTER (WHERE scorer = 'simulation') AS simulation_correlation,
           max(n_positive)                                        AS n_positive,
           max(n_negative)                                        AS n_negative,
           max(reason)       FILTER (WHERE scorer = 'detection')  AS reason
    FROM explanation_scores
    WHERE baseline = 'none'
    GROUP BY explanation_id
), shuffled AS (
    SELECT explanation_id,
           max(e_score) FILTER (WHERE scorer = 'detection') AS shuffled_e_score,
           max(auc)     FILTER (WHERE scorer = 'embedding') AS shuffled_embedding_auc
    FROM explanation_scores
    WHERE baseline = 'shuffled'
    GROUP BY explanation_id
)
SELECT x.model_id, x.prompt_set_id, x.cohort, x.layer, x.neuron, x.token, x.head_layer, x.head, x.explainer,
       x.status, x.explanation, s.e_score, s.auc, s.calibrated_e, s.embedding_auc, s.simulation_correlation,
       s.n_positive, s.n_negative, s.reason, b.shuffled_e_score, b.shuffled_embedding_auc
FROM explanations x
LEFT JOIN own s ON s.explanation_id = x.explanation_id
LEFT JOIN shuffled b ON b.explanation_id = x.explanation_id;

-- For a head, every neuron it consistently drives, with the neurons' tokens and the head's explanations.
CREATE OR REPLACE VIEW head_neurons AS
SELECT c.model_id, c.prompt_set_id, c.head_layer, c.head,
       count(*) AS neurons,
       list(c.token ORDER BY c.mean_score DESC) AS tokens,
       list('L' || c.layer || 'N' || c.neuron ORDER BY c.mean_score DESC) AS neuron_ids,
       max(c.mean_score) AS best_mean_score,
       (SELECT list(x.explanation ORDER BY x.e_score DESC NULLS LAST) FROM pair_explanations x
        WHERE x.model_id = c.model_id AND x.prompt_set_id = c.prompt_set_id AND x.head_layer = c.head_layer
          AND x.head = c.head AND x.explainer <> 'contrastive' AND x.status = 'ok') AS explanations,
       (SELECT max(x.e_score) FROM pair_explanations x
        WHERE x.model_id = c.model_id AND x.prompt_set_id = c.prompt_set_id AND x.head_layer = c.head_layer
          AND x.head = c.head AND x.explainer <> 'contrastive') AS best_e_score
FROM consistent_pairs c
GROUP BY ALL;

-- Neuron roles (Gurnee et al. 2024, docs/method.md step 1): per model and layer, how many selected next-token neurons
-- predict (heavy-tailed congruence with the vocabulary, positive skew) and how many suppress (negative skew), and the
-- same over every neuron of the layer.
CREATE OR REPLACE VIEW neuron_roles AS
SELECT model_id, layer,
       count(*) FILTER (WHERE selected)                          AS selected,
       count(*) FILTER (WHERE selected AND role = 'prediction')  AS selected_prediction,
       count(*) FILTER (WHERE selected AND role = 'suppression') AS selected_suppression,
       count(*) FILTER (WHERE selected AND role = 'other')       AS selected_other,
       median(vocab_kurtosis) FILTER (WHERE selected)            AS median_kurtosis_selected,
       count(*)                                                  AS neurons,
       count(*) FILTER (WHERE role = 'prediction')               AS prediction,
       count(*) FILTER (WHERE role = 'suppression')              AS suppression,
       median(vocab_kurtosis)                                    AS median_kurtosis
FROM neurons
GROUP BY ALL;

-- Several models side by side: next tokens (the decoded token, spaces stripped) that selected next-token neurons of two
-- models both predict; one row per pair of models and token, with each model's neurons (strongest first) and best score.
CREATE OR REPLACE VIEW shared_next_tokens AS
WITH per_model AS (
    SELECT model_id, trim(token) AS token,
           list('L' || layer || 'N' || neuron ORDER BY score DESC) AS neurons,
           max(score) AS best_score
    FROM neurons
    WHERE selected AND trim(token) <> ''
    GROUP BY model_id, trim(token)
)
SELECT a.token, a.model_id AS model_a, b.model_id AS model_b, a.neurons AS neurons_a, b.neurons AS neurons_b,
       a.best_score AS best_score_a, b.best_score AS best_score_b
FROM per_model a
JOIN per_model b ON a.token = b.token AND a.model_id < b.model_id;

-- Several models side by side: where the look-up heads lie by relative depth, head layer / the model's number of layers,
-- in tenths ([depth_from, depth_from + 0.1)), so models of different depths compare.
CREATE OR REPLACE VIEW heads_by_relative_depth AS
SELECT s.model_id, s.prompt_set_id, m.n_layers,
       floor(10 * s.head_layer::DOUBLE / m.n_layers) / 10             AS depth_from,
       count(*)                                                        AS consistent_pairs,
       count(DISTINCT 'L' || s.head_layer || 'H' || s.head)            AS heads,
       avg(s.head_layer::DOUBLE / m.n_layers)                          AS mean_depth
FROM head_neuron_scores s
JOIN models m USING (model_id)
WHERE s.consistent AND s.cohort = 'next_token'
GROUP BY ALL;

-- Several models side by side: one row per model, prompt set and explainer. The selected next-token neurons and their
-- roles; how many of their tokens another model's selected neurons also predict (shared_next_tokens); the consistent
-- heads and their mean relative depth (head layer / layers); E against the random-neuron (permutation p) and shuffled
-- baselines, detection AUC, calibrated E, embedding AUC and simulation correlation against the random neurons; the
-- ablation tests (KS, active vs inactive prompts); the share of look-ups confirmed (next-token and random pairs). A model with only a catalog has one row with no prompt set.
CREATE OR REPLACE VIEW model_comparison AS
WITH runs AS (
    SELECT DISTINCT model_id, prompt_set_id FROM neuron_exemplars
    UNION
    SELECT DISTINCT model_id, prompt_set_id FROM head_neuron_scores
), catalog AS (
    SELECT model_id,
           count(*) FILTER (WHERE selected)                          AS selected,
           count(*) FILTER (WHERE selected AND role = 'prediction')  AS selected_prediction,
           count(*) FILTER (WHERE selected AND role = 'suppression') AS selected_suppression
    FROM neurons
    GROUP BY model_id
), shared AS (
    SELECT model_id, count(DISTINCT token) AS shared_tokens, list(DISTINCT token ORDER BY token) AS shared_token_list
    FROM (SELECT model_a AS model_id, token FROM shared_next_tokens UNION ALL SELECT model_b AS model_id, token FROM shared_next_tokens)
    GROUP BY model_id
), heads AS (
    SELECT s.model_id, s.prompt_set_id,
           count(*)                                             AS consistent_pairs,
           count(DISTINCT 'L' || s.head_layer || 'H' || s.head) AS consistent_heads,
           avg(s.head_layer::DOUBLE / m.n_layers)               AS mean_head_depth,
           median(s.head_layer::DOUBLE / m.n_layers)            AS median_head_depth
    FROM head_neuron_scores s
    JOIN models m USING (model_id)
    WHERE s.consistent AND s.cohort = 'next_token'
    GROUP BY ALL
), ablation AS (
    SELECT model_id, prompt_set_id,
           max(mean_active) FILTER (WHERE metric = 'act_drop')    AS act_drop_active,
           max(mean_inactive) FILTER (WHERE metric = 'act_drop')  AS act_drop_inactive,
           max(ks_statistic) FILTER (WHERE metric = 'act_drop')   AS act_drop_ks,
           max(p_value) FILTER (WHERE metric = 'act_drop')        AS act_drop_p,
           max(mean_active) FILTER (WHERE metric = 'prob_drop')   AS prob_drop_active,
           max(mean_inactive) FILTER (WHERE metric = 'prob_drop') AS prob_drop_inactive,
           max(ks_statistic) FILTER (WHERE metric = 'prob_drop')  AS prob_drop_ks,
           max(p_value) FILTER (WHERE metric = 'prob_drop')       AS prob_drop_p
    FROM ablation_tests
    GROUP BY ALL
), scores AS (  -- per explainer: the figures of each scorer against the random neurons (and E against shuffled)
    SELECT model_id, prompt_set_id, explainer,
           max(n) FILTER (WHERE scorer = 'detection' AND measure = 'e_score')                                    AS n_scored,
           max(mean) FILTER (WHERE scorer = 'detection' AND measure = 'e_score')                                 AS mean_e,
           max(ci_low) FILTER (WHERE scorer = 'detection' AND measure = 'e_score')                               AS mean_e_ci_low,
           max(ci_high) FILTER (WHERE scorer = 'detection' AND measure = 'e_score')                              AS mean_e_ci_high,
           max(mean) FILTER (WHERE scorer = 'detection' AND measure = 'auc')                                     AS mean_auc,
           max(mean_baseline) FILTER (WHERE scorer = 'detection' AND measure = 'e_score' AND baseline = 'random_neurons') AS mean_e_random_neurons,
           max(permutation_p) FILTER (WHERE scorer = 'detection' AND measure = 'e_score' AND baseline = 'random_neurons') AS p_vs_random_neurons,
           max(mean_baseline) FILTER (WHERE scorer = 'detection' AND measure = 'e_score' AND baseline = 'shuffled')       AS mean_e_shuffled,
           max(mw_p) FILTER (WHERE scorer = 'detection' AND measure = 'e_score' AND baseline = 'shuffled')                AS p_vs_shuffled,
           max(wilcoxon_p) FILTER (WHERE scorer = 'detection' AND measure = 'e_score' AND baseline = 'shuffled')          AS paired_p_vs_shuffled,
           max(mean) FILTER (WHERE scorer = 'detection' AND measure = 'calibrated_e')                            AS mean_calibrated_e,
           max(mean) FILTER (WHERE scorer = 'embedding' AND measure = 'auc')                                     AS mean_embedding_auc,
           max(mean_baseline) FILTER (WHERE scorer = 'embedding' AND measure = 'auc' AND baseline = 'random_neurons') AS mean_embedding_auc_random,
           max(permutation_p) FILTER (WHERE scorer = 'embedding' AND measure = 'auc' AND baseline = 'random_neurons') AS embedding_p_vs_random,
           max(mean) FILTER (WHERE scorer = 'simulation' AND measure = 'correlation')                            AS mean_simulation_r,
           max(mean_baseline) FILTER (WHERE scorer = 'simulation' AND measure = 'correlation' AND baseline = 'random_neurons') AS mean_simulation_r_random,
           max(permutation_p) FILTER (WHERE scorer = 'simulation' AND measure = 'correlation' AND baseline = 'random_neurons') AS simulation_p_vs_random
    FROM explanation_tests
    GROUP BY ALL
), lookups AS (  -- the counterfactual test of the look-ups (docs/method.md, "Look-ups")
    SELECT model_id, prompt_set_id,
           count(*) FILTER (WHERE cohort = 'next_token')                     AS lookup_pairs_tested,
           avg(confirmed::INTEGER) FILTER (WHERE cohort = 'next_token')      AS lookup_share_confirmed,
           avg(confirmed::INTEGER) FILTER (WHERE cohort = 'random')          AS lookup_share_confirmed_random
    FROM lookup_tests
    GROUP BY ALL
), knockouts AS (  -- the attention knockout of the look-ups (docs/method.md, "Why the head looks there")
    SELECT model_id, prompt_set_id,
           count(*) FILTER (WHERE cohort = 'next_token' AND prompt_kind = 'truncated')                AS knockout_pairs_tested,
           avg(confirmed::INTEGER) FILTER (WHERE cohort = 'next_token' AND prompt_kind = 'truncated')   AS knockout_share_confirmed,
           avg(confirmed::INTEGER) FILTER (WHERE cohort = 'random' AND prompt_kind = 'truncated')       AS knockout_share_confirmed_random,
           avg(confirmed::INTEGER) FILTER (WHERE cohort = 'next_token' AND prompt_kind = 'untruncated') AS knockout_share_confirmed_untruncated,
           avg(confirmed::INTEGER) FILTER (WHERE cohort = 'random' AND prompt_kind = 'untruncated')     AS knockout_share_confirmed_untruncated_random
    FROM knockout_tests
    GROUP BY ALL
)
SELECT m.model_id, r.prompt_set_id, m.n_layers, m.d_mlp,
       coalesce(c.selected, 0)              AS selected,
       coalesce(c.selected_prediction, 0)   AS selected_prediction,
       coalesce(c.selected_suppression, 0)  AS selected_suppression,
       coalesce(sh.shared_tokens, 0)        AS shared_tokens,
       coalesce(sh.shared_token_list, [])   AS shared_token_list,
       coalesce(h.consistent_pairs, 0)      AS consistent_pairs,
       coalesce(h.consistent_heads, 0)      AS consistent_heads,
       h.mean_head_depth, h.median_head_depth,
       e.explainer, e.n_scored, e.mean_e, e.mean_e_ci_low, e.mean_e_ci_high, e.mean_e_random_neurons, e.p_vs_random_neurons,
       e.mean_e_shuffled, e.p_vs_shuffled, e.paired_p_vs_shuffled, e.mean_auc, e.mean_calibrated_e,
       e.mean_embedding_auc, e.mean_embedding_auc_random, e.embedding_p_vs_random,
       e.mean_simulation_r, e.mean_simulation_r_random, e.simulation_p_vs_random,
       a.act_drop_active, a.act_drop_inactive, a.act_drop_ks, a.act_drop_p,
       a.prob_drop_active, a.prob_drop_inactive, a.prob_drop_ks, a.prob_drop_p,
       coalesce(l.lookup_pairs_tested, 0)  AS lookup_pairs_tested, l.lookup_share_confirmed, l.lookup_share_confirmed_random,
       coalesce(k.knockout_pairs_tested, 0) AS knockout_pairs_tested, k.knockout_share_confirmed, k.knockout_share_confirmed_random,
       k.knockout_share_confirmed_untruncated, k.knockout_share_confirmed_untruncated_random
FROM models m
LEFT JOIN runs r ON r.model_id = m.model_id
LEFT JOIN catalog c ON c.model_id = m.model_id
LEFT JOIN shared sh ON sh.model_id = m.model_id
LEFT JOIN heads h ON h.model_id = m.model_id AND h.prompt_set_id = r.prompt_set_id
LEFT JOIN ablation a ON a.model_id = m.model_id AND a.prompt_set_id = r.prompt_set_id
LEFT JOIN scores e ON e.model_id = m.model_id AND e.prompt_set_id = r.prompt_set_id
LEFT JOIN lookups l ON l.model_id = m.model_id AND l.prompt_set_id = r.prompt_set_id
LEFT JOIN knockouts k ON k.model_id = m.model_id AND k.prompt_set_id = r.prompt_set_id;

-- docs/method.md, "Look-ups": per consistent pair, what its head reads on its active prompts (both splits): the
-- tokens read most (by total contribution), the concentration (median share of the head's score from its top
-- position), the median distance of that position, and the flags a researcher looks for first, each held
-- when the top position is that kind on at least half the active prompts: copying (the token the neuron
-- predicts), previous token (distance 1), BOS (no look-up).
CREATE OR REPLACE VIEW pair_lookups AS
WITH active AS (
    SELECT * FROM head_lookups WHERE active
), top AS (
    SELECT a.*, (a.token_id = n.token_id) AS is_predicted
    FROM active a JOIN neurons n USING (model_id, layer, neuron)
    WHERE a.rank = 1
), by_token AS (
    SELECT model_id, prompt_set_id, layer, neuron, head_layer, head, token, sum(contribution) AS total
    FROM active
    GROUP BY ALL
), top_tokens AS (
    SELECT model_id, prompt_set_id, layer, neuron, head_layer, head,
           list(token ORDER BY total DESC, token) FILTER (WHERE r <= 5) AS top_tokens,
           list(round(total, 4) ORDER BY total DESC, token) FILTER (WHERE r <= 5) AS top_token_totals
    FROM (SELECT *, row_number() OVER (PARTITION BY model_id, prompt_set_id, layer, neuron, head_layer, head ORDER BY total DESC, token) AS r
          FROM by_token)
    GROUP BY ALL
)
SELECT t.model_id, t.prompt_set_id, t.cohort, t.layer, t.neuron, n.token AS neuron_token, t.head_layer, t.head,
       count(*) AS n_active_prompts,
       k.top_tokens, k.top_token_totals,
       median(t.share) AS concentration,
       median(t.distance) AS median_distance,
       avg(t.is_predicted::INTEGER) AS top_predicted_share,
       avg((t.distance = 1)::INTEGER) AS top_previous_share,
       avg((t.position = 0)::INTEGER) AS top_bos_share,
       avg(t.is_predicted::INTEGER) >= 0.5 AS copying,
       avg((t.distance = 1)::INTEGER) >= 0.5 AS previous_token,
       avg((t.position = 0)::INTEGER) >= 0.5 AS reads_bos
FROM top t
JOIN neurons n USING (model_id, layer, neuron)
JOIN top_tokens k USING (model_id, prompt_set_id, layer, neuron, head_layer, head)
GROUP BY t.model_id, t.prompt_set_id, t.cohort, t.layer, t.neuron, n.token, t.head_layer, t.head, k.top_tokens, k.top_token_totals;

-- The counterfactual test per model, prompt set and cohort: the share of tested pairs whose look-up is confirmed
-- (replacing the token the head reads lowers the neuron more than replacing a control position; BH q <= the
-- run's false discovery rate), next-token pairs against the random-baseline pairs.
CREATE OR REPLACE VIEW lookup_confirmation AS
SELECT model_id, prompt_set_id, cohort,
       count(*) AS pairs_tested,
       count(*) FILTER (WHERE confirmed) AS pairs_confirmed,
       avg(confirmed::INTEGER) AS share_confirmed,
       median(mean_act_drop_lookup) AS median_act_drop_lookup,
       median(mean_act_drop_control) AS median_act_drop_control,
       median(mean_score_drop_share_lookup) AS median_score_drop_share_lookup,
       median(mean_score_drop_share_control) AS median_score_drop_share_control
FROM lookup_tests
GROUP BY ALL;

-- The attention knockout per model, prompt set, cohort and prompt kind (truncated or untruncated): the share of tested pairs confirmed (blocking the
-- edge to the looked-up position in the pair's head lowers the neuron more than blocking a control position of the
-- same head and the same position in a control head; both BH q <= the run's false discovery rate), next to the
-- substitution test's share (lookup_confirmation) on the same pairs.
CREATE OR REPLACE VIEW knockout_confirmation AS
SELECT k.model_id, k.prompt_set_id, k.cohort, k.prompt_kind,
       count(*) AS pairs_tested,
       count(*) FILTER (WHERE k.confirmed) AS pairs_confirmed,
       avg(k.confirmed::INTEGER) AS share_confirmed,
       avg(t.confirmed::INTEGER) AS substitution_share_confirmed,
       median(k.mean_act_drop_lookup) AS median_act_drop_lookup,
       median(k.mean_act_drop_control_position) AS median_act_drop_control_position,
       median(k.mean_act_drop_control_head) AS median_act_drop_control_head,
       median(k.mean_score_drop_share_lookup) AS median_score_drop_share_lookup
FROM knockout_tests k
LEFT JOIN lookup_tests t USING (model_id, prompt_set_id, cohort, layer, neuron, head_layer, head)
GROUP BY ALL;

-- Why each pair's head looks where it does (docs/method.md, "Why the head looks there"), over its active prompts' top
-- looked-up edges (QK attribution): the components that most often carry the key side at the looked-up position and
-- the query side at the last position (rank 1 of their side), how often, and whether the look-up is lexical: the key
-- side's largest component is the looked-up token's own embedding on at least half of the edges (else the head finds
-- the position by context written into it by earlier layers).
CREATE OR REPLACE VIEW pair_qk AS
WITH edges AS (
    SELECT model_id, prompt_set_id, cohort, layer, neuron, head_layer, head, doc_id, position,
           any_value(score) AS score, any_value(attention) AS attention, any_value(margin) AS margin,
           any_value(component) FILTER (WHERE side = 'key' AND rank = 1) AS key_top,
           any_value(component) FILTER (WHERE side = 'query' AND rank = 1) AS query_top,
           any_value(share) FILTER (WHERE side = 'key' AND component = 'embed') AS lexical_share
    FROM qk_attributions
    WHERE lookup_rank = 1 AND active
    GROUP BY ALL
), key_counts AS (
    SELECT model_id, prompt_set_id, layer, neuron, head_layer, head, key_top AS component, count(*) AS n
    FROM edges GROUP BY ALL
), query_counts AS (
    SELECT model_id, prompt_set_id, layer, neuron, head_layer, head, query_top AS component, count(*) AS n
    FROM edges GROUP BY ALL
), key_lists AS (
    SELECT model_id, prompt_set_id, layer, neuron, head_layer, head,
           list(component ORDER BY n DESC, component)[1:3] AS key_components,
           list(n ORDER BY n DESC, component)[1:3] AS key_component_edges
    FROM key_counts GROUP BY ALL
), query_lists AS (
    SELECT model_id, prompt_set_id, layer, neuron, head_layer, head,
           list(component ORDER BY n DESC, component)[1:3] AS query_components,
           list(n ORDER BY n DESC, component)[1:3] AS query_component_edges
    FROM query_counts GROUP BY ALL
)
SELECT e.model_id, e.prompt_set_id, e.cohort, e.layer, e.neuron, e.head_layer, e.head,
       count(*) AS n_edges,
       k.key_components, k.key_component_edges, q.query_components, q.query_component_edges,
       avg((e.key_top = 'embed')::INTEGER) AS lexical_edges_share,
       median(e.lexical_share) AS median_lexical_share,
       avg((e.key_top = 'embed')::INTEGER) >= 0.5 AS lexical,
       median(e.score) AS median_score, median(e.margin) AS median_margin, median(e.attention) AS median_attention
FROM edges e
JOIN key_lists k USING (model_id, prompt_set_id, layer, neuron, head_layer, head)
JOIN query_lists q USING (model_id, prompt_set_id, layer, neuron, head_layer, head)
GROUP BY e.model_id, e.prompt_set_id, e.cohort, e.layer, e.neuron, e.head_layer, e.head,
         k.key_components, k.key_component_edges, q.query_components, q.query_component_edges;

-- QK attribution per model, prompt set and cohort: the share of tested pairs whose look-up is lexical, the most
-- frequent query-side and key-side components over all their edges, and the identity's worst case.
CREATE OR REPLACE VIEW qk_summary AS
WITH edges AS (
    SELECT model_id, prompt_set_id, cohort, layer, neuron, head_layer, head, doc_id, position,
           any_value(component) FILTER (WHERE side = 'key' AND rank = 1) AS key_top,
           any_value(component) FILTER (WHERE side = 'query' AND rank = 1) AS query_top,
           max(identity_rel_error) AS identity_rel_error
    FROM qk_attributions
    WHERE lookup_rank = 1 AND active
    GROUP BY ALL
)
SELECT model_id, prompt_set_id, cohort,
       count(DISTINCT (layer, neuron, head_layer, head)) AS pairs,
       count(*) AS edges,
       avg((key_top = 'embed')::INTEGER) AS lexical_edges_share,
       mode(query_top) AS most_frequent_query_component,
       mode(key_top) AS most_frequent_key_component,
       max(identity_rel_error) AS identity_max_rel_error
FROM edges
GROUP BY ALL;
