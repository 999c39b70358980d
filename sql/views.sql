-- Views over the results: the questions users ask, answered in SQL. Applied after schema.sql; idempotent.

-- DESIGN step 9: where the look-up heads lie. Per head layer, how many consistent (neuron, head) pairs.
CREATE OR REPLACE VIEW heads_by_layer AS
SELECT model_id, prompt_set_id, head_layer,
       count(*) FILTER (WHERE consistent)                  AS consistent_pairs,
       count(DISTINCT head) FILTER (WHERE consistent)      AS heads_with_consistent_pairs,
       count(*)                                            AS candidate_pairs
FROM head_neuron_scores
GROUP BY ALL;

-- DESIGN step 9: the ablation comparison per model (the paper's GPT-2 large: KS 0.29, p 2e-23).
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
WHERE s.consistent;

-- The strongest qualifying next-token neurons of every layer (the catalog's ranking; `selected` marks the run's set).
CREATE OR REPLACE VIEW strongest_neurons_per_layer AS
SELECT model_id, layer, layer_rank + 1 AS rank_in_layer, neuron, token, score, zscore, selected
FROM neurons
WHERE qualifies;

-- For a head, every neuron it consistently drives, with the neurons' tokens.
CREATE OR REPLACE VIEW head_neurons AS
SELECT model_id, prompt_set_id, head_layer, head,
       count(*) AS neurons,
       list(token ORDER BY mean_score DESC) AS tokens,
       list('L' || layer || 'N' || neuron ORDER BY mean_score DESC) AS neuron_ids,
       max(mean_score) AS best_mean_score
FROM consistent_pairs
GROUP BY ALL;
