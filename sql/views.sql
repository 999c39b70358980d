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



-- step 9 of docs/method.md: the distribution of the Head Explanation Score E per model, explainer and what was scored
-- (next-token pairs, the random-neuron baseline, shuffled explanations), computed here in SQL.
CREATE OR REPLACE VIEW explanation_findings AS
SELECT model_id, prompt_set_id, explainer,
       CASE WHEN baseline = 'shuffled' THEN 'shuffled explanations'
            WHEN cohort = 'random' THEN 'random neurons (baseline)'
            ELSE 'next-token neurons' END          AS scored_on,
       count(*) FILTER (WHERE status = 'scored')   AS n_scored,
       count(*) FILTER (WHERE status <> 'scored')  AS n_not_scored,
       avg(e_score)                                AS mean_e,
       stddev_samp(e_score)                        AS std_e,
       skewness(e_score)                           AS skew_e,
       avg(auc)                                    AS mean_auc,
       sum(n_malformed)                            AS malformed_answers,
       sum(n_errors)                               AS failed_calls
FROM explanation_scores
GROUP BY ALL;

-- The tests behind the findings: skewtest of E, and two-sided Mann-Whitney U of E against each baseline
-- (the paper's GPT-2 large: mean E 0.575 vs 0.558 for random neurons).
CREATE OR REPLACE VIEW explanation_comparison AS
SELECT model_id, prompt_set_id, explainer, baseline, n, mean_e, std_e, skew, skew_z, skew_p,
       n_baseline, mean_baseline, std_baseline, mw_u, mw_p, mean_auc
FROM explanation_tests;

-- Each explained pair with its explanation and score, one row per explainer (next-token and random neurons).
CREATE OR REPLACE VIEW pair_explanations AS
SELECT x.model_id, x.prompt_set_id, x.cohort, x.layer, x.neuron, x.token, x.head_layer, x.head, x.explainer,
       x.status, x.explanation, s.e_score, s.auc, s.n_positive, s.n_negative, s.reason,
       b.e_score AS shuffled_e_score
FROM explanations x
LEFT JOIN explanation_scores s ON s.explanation_id = x.explanation_id AND s.baseline = 'none'
LEFT JOIN explanation_scores b ON b.explanation_id = x.explanation_id AND b.baseline = 'shuffled';

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
