-- Several models side by side, one row per model, prompt set and explainer: selected next-token neurons and how many
-- predict or suppress, next tokens shared with another model's selected neurons, consistent heads and their relative
-- depth (head layer / layers), the explanations' scores against the random-neuron baseline (detection AUC, E, embedding
-- AUC, simulation correlation, each with its permutation p) and E against shuffled explanations, the ablation KS tests,
-- the share of look-ups the counterfactual test confirmed (next-token and random-baseline pairs). No parameters: every
-- model in the store.
SELECT
    model_id, prompt_set_id, n_layers, selected, selected_prediction AS predicting, selected_suppression AS suppressing,
    shared_tokens, shared_token_list[1:8] AS shared_token_examples, consistent_pairs, consistent_heads,
    round(mean_head_depth, 2) AS mean_head_depth, explainer, n_scored, round(mean_auc, 3) AS mean_auc, round(mean_e, 3) AS mean_e,
    round(mean_e_random_neurons, 3) AS mean_e_random, p_vs_random_neurons AS p_random,
    round(mean_e_shuffled, 3) AS mean_e_shuffled, p_vs_shuffled AS p_shuffled,
    round(mean_embedding_auc, 3) AS embedding_auc, round(mean_embedding_auc_random, 3) AS embedding_auc_random, embedding_p_vs_random AS embedding_p_random,
    round(mean_simulation_r, 3) AS simulation_r, round(mean_simulation_r_random, 3) AS simulation_r_random, simulation_p_vs_random AS simulation_p_random,
    round(act_drop_ks, 3) AS act_drop_ks, act_drop_p, round(prob_drop_ks, 3) AS prob_drop_ks, prob_drop_p,
    lookup_pairs_tested, round(lookup_share_confirmed, 3) AS lookup_confirmed, round(lookup_share_confirmed_random, 3) AS lookup_confirmed_random
FROM model_comparison
ORDER BY model_id, prompt_set_id NULLS LAST, explainer NULLS LAST;
