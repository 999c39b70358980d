-- The model and prompt set of a run with row counts per table. Parameters: $model_id, $prompt_set_id.
WITH m AS (
    SELECT * FROM models WHERE model_id = coalesce($model_id, (SELECT model_id FROM models ORDER BY recorded_at DESC LIMIT 1))
), p AS (
    SELECT * FROM prompt_sets WHERE prompt_set_id = coalesce($prompt_set_id, (SELECT prompt_set_id FROM prompt_sets ORDER BY recorded_at DESC LIMIT 1))
)
SELECT
    m.model_id, m.n_layers, m.d_mlp, m.mlp_kind,
    p.prompt_set_id, p.n_explain, p.n_heldout, p.duplicates_dropped,
    (SELECT count(*) FROM models) AS models,
    (SELECT count(*) FROM neurons n WHERE n.model_id = m.model_id) AS neurons,
    (SELECT count(*) FROM neurons n WHERE n.model_id = m.model_id AND n.selected) AS selected,
    (SELECT count(*) FROM prompt_sets) AS prompt_sets,
    (SELECT count(*) FROM documents d WHERE d.prompt_set_id = p.prompt_set_id) AS documents,
    (SELECT count(*) FROM neuron_exemplars e WHERE e.model_id = m.model_id AND e.prompt_set_id = p.prompt_set_id) AS neuron_exemplars,
    (SELECT count(*) FROM head_attributions a WHERE a.model_id = m.model_id AND a.prompt_set_id = p.prompt_set_id) AS head_attributions,
    (SELECT count(*) FROM head_neuron_scores s WHERE s.model_id = m.model_id AND s.prompt_set_id = p.prompt_set_id AND s.consistent AND s.cohort = 'next_token') AS consistent_pairs,
    (SELECT count(*) FROM head_ablations b WHERE b.model_id = m.model_id AND b.prompt_set_id = p.prompt_set_id) AS head_ablations
FROM m, p;
