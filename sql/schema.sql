-- The DuckDB schema of lookups: the one place DDL lives; idempotent.
-- Keys: model_id = readable name + weights fingerprint; prompt_set_id = content hash of the documents.
-- Each write replaces the rows of one key: a Parquet file per (table, key), conformed through these tables
-- in memory first (types, NOT NULL, CHECK, primary key, defaults); see pipeline/store/store.py. The key
-- columns a table is written per follow `-- written per:` on its CREATE TABLE line (the store reads them there).

CREATE TABLE IF NOT EXISTS models (  -- written per: model_id
    model_id      VARCHAR PRIMARY KEY,   -- e.g. smollm2-135m-instruct@3f2a9c0d1e4b
    name          VARCHAR NOT NULL,      -- what the user asked for
    origin        VARCHAR NOT NULL,      -- embedded-gguf | planted | huggingface | local
    fingerprint   VARCHAR NOT NULL,      -- sha256 over the weight files
    n_layers      INTEGER NOT NULL,
    n_heads       INTEGER NOT NULL,
    n_kv_heads    INTEGER NOT NULL,
    d_model       INTEGER NOT NULL,
    d_head        INTEGER NOT NULL,
    d_mlp         INTEGER NOT NULL,
    d_vocab       INTEGER NOT NULL,
    n_ctx         INTEGER NOT NULL,
    act_fn        VARCHAR NOT NULL,
    mlp_kind      VARCHAR NOT NULL,      -- gated (act = f(gate) * up) | ungated
    normalization VARCHAR NOT NULL,
    bos_token_id  INTEGER NOT NULL,
    recorded_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS neurons (  -- written per: model_id
    model_id      VARCHAR NOT NULL,
    layer         INTEGER NOT NULL,
    neuron        INTEGER NOT NULL,
    token_id      BIGINT NOT NULL,       -- argmax_t W_out[layer][neuron] . W_U[:, t]
    token         VARCHAR NOT NULL,
    score         DOUBLE NOT NULL,       -- that max
    zscore        DOUBLE NOT NULL,       -- (max - mean) / std over the vocabulary
    vocab_mean    DOUBLE NOT NULL,
    vocab_std     DOUBLE NOT NULL,
    vocab_skew    DOUBLE NOT NULL,       -- skewness of the congruence over the vocabulary (population moments)
    vocab_kurtosis DOUBLE NOT NULL,      -- its excess kurtosis (0 for a Gaussian)
    top_token_ids BIGINT[] NOT NULL,
    top_tokens    VARCHAR[] NOT NULL,
    top_scores    DOUBLE[] NOT NULL,
    bottom_token_id BIGINT NOT NULL,     -- argmin: the token the neuron suppresses most
    bottom_token  VARCHAR NOT NULL,
    bottom_score  DOUBLE NOT NULL,       -- that min
    -- Gurnee et al. 2024: prediction (suppression) when vocab_kurtosis > neuron_catalog.role_kurtosis_min and the skew is positive (negative)
    role          VARCHAR NOT NULL CHECK (role IN ('prediction', 'suppression', 'other')),
    qualifies     BOOLEAN NOT NULL,      -- its token starts a word, is long enough and not denied
    layer_rank    INTEGER NOT NULL,      -- rank by score among the layer's qualifying neurons; -1 if not qualifying
    selected      BOOLEAN NOT NULL,      -- top N per layer in the last K layers
    random_baseline BOOLEAN NOT NULL DEFAULT false,  -- a random neuron of a selected layer: the explanation baseline
    PRIMARY KEY (model_id, layer, neuron)
);
ALTER TABLE neurons ADD COLUMN IF NOT EXISTS random_baseline BOOLEAN DEFAULT false;  -- files written before it

-- Its source, settings and counts are those of the corpus that first built it; every corpus's own: corpus_reads.
CREATE TABLE IF NOT EXISTS prompt_sets (  -- written per: prompt_set_id
    prompt_set_id       VARCHAR PRIMARY KEY,
    source              VARCHAR NOT NULL,
    corpus_hash         VARCHAR NOT NULL,  -- content hash of the source documents as read
    settings            JSON NOT NULL,
    n_documents         INTEGER NOT NULL,
    n_explain           INTEGER NOT NULL,
    n_heldout           INTEGER NOT NULL,
    source_documents    INTEGER NOT NULL,
    duplicates_dropped  INTEGER NOT NULL,
    beyond_slice        INTEGER NOT NULL,
    skipped_empty       INTEGER NOT NULL,
    skipped_undecodable INTEGER NOT NULL,
    skipped_malformed   INTEGER NOT NULL,
    recorded_at         TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- One row per corpus version that built a prompt set: what it read, skipped and dropped. The prompt set's id
-- hashes its passages alone, so corpora that normalise to the same passages share it and every result after
-- it; their counts differ, and each keeps its own here (docs/data.md).
CREATE TABLE IF NOT EXISTS corpus_reads (  -- written per: prompt_set_id, corpus_read_id
    prompt_set_id       VARCHAR NOT NULL,
    corpus_read_id      VARCHAR NOT NULL,  -- hash of the source, its content hash, the settings and every count below
    source              VARCHAR NOT NULL,
    corpus_hash         VARCHAR NOT NULL,  -- content hash of the source documents as read
    settings            JSON NOT NULL,     -- the prompt set's settings
    n_read              INTEGER NOT NULL,  -- source documents read
    skipped_empty       INTEGER NOT NULL,
    skipped_undecodable INTEGER NOT NULL,  -- not UTF-8, or holding NUL bytes
    skipped_malformed   INTEGER NOT NULL,
    duplicates_dropped  INTEGER NOT NULL,
    beyond_slice        INTEGER NOT NULL,
    control_stripped    INTEGER NOT NULL,  -- source documents that had terminal escapes or control characters removed
    recorded_at         TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (prompt_set_id, corpus_read_id)
);

CREATE TABLE IF NOT EXISTS documents (  -- written per: prompt_set_id
    prompt_set_id VARCHAR NOT NULL,
    doc_id        VARCHAR NOT NULL,      -- hash of the normalised, case- and space-folded text
    doc_index     INTEGER NOT NULL,      -- order in the prompt set
    source_id     VARCHAR NOT NULL,      -- the source document it was cut from (decides the split)
    title         VARCHAR,
    passage_index INTEGER NOT NULL,
    split         VARCHAR NOT NULL CHECK (split IN ('explain', 'heldout')),
    text          VARCHAR NOT NULL,
    n_chars       INTEGER NOT NULL,
    PRIMARY KEY (prompt_set_id, doc_id)
);

CREATE TABLE IF NOT EXISTS neuron_exemplars (  -- written per: model_id, prompt_set_id
    model_id         VARCHAR NOT NULL,
    prompt_set_id    VARCHAR NOT NULL,
    layer            INTEGER NOT NULL,
    neuron           INTEGER NOT NULL,
    doc_id           VARCHAR NOT NULL,
    split            VARCHAR NOT NULL,
    rank             INTEGER NOT NULL,   -- 1 = highest original max activation among the kept prompts
    doc_max_act      DOUBLE NOT NULL,    -- the document's max activation (BOS prepended, in its window)
    doc_max_pos      INTEGER NOT NULL,   -- its position in the document's tokens (BOS not counted)
    window_start     INTEGER NOT NULL,   -- first token of the window the document was run in
    prompt_start     INTEGER NOT NULL,   -- first token of the truncated prompt
    prompt_n_tokens  INTEGER NOT NULL,   -- truncated prompt length, BOS not counted
    prompt_token_ids BIGINT[] NOT NULL,  -- the exact tokens (re-tokenizing prompt_text may differ)
    prompt_text      VARCHAR NOT NULL,
    prompt_act       DOUBLE NOT NULL,    -- activation at the prompt's last token, BOS prepended
    act_ratio        DOUBLE NOT NULL,    -- prompt_act / doc_max_act
    next_token_id    BIGINT NOT NULL,    -- the neuron's token
    next_token       VARCHAR NOT NULL,
    PRIMARY KEY (model_id, prompt_set_id, layer, neuron, doc_id)
);

-- step 4 of docs/method.md: each candidate head's direct contribution to a neuron at its exemplar's last position.
CREATE TABLE IF NOT EXISTS head_attributions (  -- written per: model_id, prompt_set_id
    model_id          VARCHAR NOT NULL,
    prompt_set_id     VARCHAR NOT NULL,
    layer             INTEGER NOT NULL,
    neuron            INTEGER NOT NULL,
    doc_id            VARCHAR NOT NULL,  -- the exemplar (see neuron_exemplars)
    split             VARCHAR NOT NULL,
    head_layer        INTEGER NOT NULL,  -- 0..layer: layer L's attention feeds layer L's MLP
    head              INTEGER NOT NULL,
    gate_contribution DOUBLE,            -- to the gate pre-activation (gated MLPs; NULL otherwise)
    in_contribution   DOUBLE NOT NULL,   -- to the up pre-activation (gated) or the pre-activation (ungated)
    score             DOUBLE NOT NULL,   -- gated: f'(g)·u·gate + f(g)·in; ungated: in
    active            BOOLEAN NOT NULL,  -- score > mean + active_sigma·std over the candidate heads on this prompt
    PRIMARY KEY (model_id, prompt_set_id, layer, neuron, doc_id, head_layer, head)
);

-- Per exemplar: the full decomposition of the neuron's pre-activation(s), and how exactly it sums.
CREATE TABLE IF NOT EXISTS exemplar_decompositions (  -- written per: model_id, prompt_set_id
    model_id           VARCHAR NOT NULL,
    prompt_set_id      VARCHAR NOT NULL,
    layer              INTEGER NOT NULL,
    neuron             INTEGER NOT NULL,
    doc_id             VARCHAR NOT NULL,
    split              VARCHAR NOT NULL,
    n_tokens           INTEGER NOT NULL,  -- prompt length, BOS not counted
    pre_gate           DOUBLE,            -- the model's gate pre-activation (gated MLPs)
    pre_in             DOUBLE NOT NULL,   -- the model's up pre-activation (gated) or pre-activation (ungated)
    act                DOUBLE NOT NULL,   -- the neuron's activation (hook_post)
    sum_gate           DOUBLE,            -- sum of every component below, gate side
    sum_in             DOUBLE NOT NULL,
    heads_gate         DOUBLE,            -- all heads of layers 0..layer
    heads_in           DOUBLE NOT NULL,
    mlps_gate          DOUBLE,            -- all MLPs of layers 0..layer-1
    mlps_in            DOUBLE NOT NULL,
    embed_gate         DOUBLE,            -- token (and additive position) embeddings
    embed_in           DOUBLE NOT NULL,
    bias_gate          DOUBLE,            -- accumulated residual biases plus the neuron's own input bias
    bias_in            DOUBLE NOT NULL,
    scale_gate         DOUBLE,            -- the rounding scale of the gate side (docs/quality.md#tolerances)
    scale_in           DOUBLE,            -- sum over what the stream adds of sum_k |x_k read_k|: fp32 rounds pre by a few u of it per operation
    identity_abs_error DOUBLE NOT NULL,   -- max over gate/in of |sum - pre|
    identity_rel_error DOUBLE NOT NULL,   -- max over gate/in of |sum - pre| / scale
    active_threshold   DOUBLE NOT NULL,
    n_candidate_heads  INTEGER NOT NULL,
    n_active_heads     INTEGER NOT NULL,
    PRIMARY KEY (model_id, prompt_set_id, layer, neuron, doc_id)
);

-- step 5 of docs/method.md: per (neuron, head), over the neuron's explain prompts; held-out ground truth summarised.
CREATE TABLE IF NOT EXISTS head_neuron_scores (  -- written per: model_id, prompt_set_id
    model_id                VARCHAR NOT NULL,
    prompt_set_id           VARCHAR NOT NULL,
    layer                   INTEGER NOT NULL,
    neuron                  INTEGER NOT NULL,
    head_layer              INTEGER NOT NULL,
    head                    INTEGER NOT NULL,
    n_prompts               INTEGER NOT NULL,  -- explain prompts
    mean_score              DOUBLE NOT NULL,
    std_score               DOUBLE NOT NULL,
    mean_gate               DOUBLE,
    mean_in                 DOUBLE NOT NULL,
    active_count            INTEGER NOT NULL,
    active_fraction         DOUBLE NOT NULL,
    rank                    INTEGER NOT NULL,  -- 1 = highest mean score for this neuron
    consistent              BOOLEAN NOT NULL,  -- consistent_min <= active_fraction <= consistent_max (and enough prompts)
    heldout_n_prompts       INTEGER NOT NULL,
    heldout_active_count    INTEGER NOT NULL,
    heldout_active_fraction DOUBLE,
    cohort                  VARCHAR NOT NULL DEFAULT 'next_token',  -- next_token (selected) | random (baseline neuron)
    PRIMARY KEY (model_id, prompt_set_id, layer, neuron, head_layer, head)
);
ALTER TABLE head_neuron_scores ADD COLUMN IF NOT EXISTS cohort VARCHAR DEFAULT 'next_token';

-- step 8 of docs/method.md: each consistent pair's head zero-ablated on each of the neuron's prompts.
CREATE TABLE IF NOT EXISTS head_ablations (  -- written per: model_id, prompt_set_id
    model_id      VARCHAR NOT NULL,
    prompt_set_id VARCHAR NOT NULL,
    layer         INTEGER NOT NULL,
    neuron        INTEGER NOT NULL,
    doc_id        VARCHAR NOT NULL,
    split         VARCHAR NOT NULL,
    head_layer    INTEGER NOT NULL,
    head          INTEGER NOT NULL,
    active        BOOLEAN NOT NULL,  -- the head was active on this prompt (head_attributions)
    clean_act     DOUBLE NOT NULL,
    ablated_act   DOUBLE NOT NULL,
    act_drop      DOUBLE NOT NULL,   -- clean - ablated
    clean_prob    DOUBLE NOT NULL,   -- probability of the neuron's token after the prompt
    ablated_prob  DOUBLE NOT NULL,
    prob_drop     DOUBLE NOT NULL,
    PRIMARY KEY (model_id, prompt_set_id, layer, neuron, head_layer, head, doc_id)
);

-- Active vs inactive prompts' ablation effects, two-sample Kolmogorov-Smirnov test, per model and prompt set.
CREATE TABLE IF NOT EXISTS ablation_tests (  -- written per: model_id, prompt_set_id
    model_id        VARCHAR NOT NULL,
    prompt_set_id   VARCHAR NOT NULL,
    metric          VARCHAR NOT NULL,  -- act_drop | prob_drop
    n_active        INTEGER NOT NULL,
    n_inactive      INTEGER NOT NULL,
    mean_active     DOUBLE,
    mean_inactive   DOUBLE,
    median_active   DOUBLE,
    median_inactive DOUBLE,
    ks_statistic    DOUBLE,
    p_value         DOUBLE,
    PRIMARY KEY (model_id, prompt_set_id, metric)
);

-- docs/method.md, "Look-ups": each consistent pair's head's attribution split by the source position it reads, on
-- every prompt of its neuron (both splits). Per (pair, prompt) the terms sum to the stored attribution.
CREATE TABLE IF NOT EXISTS head_lookups (  -- written per: model_id, prompt_set_id
    model_id           VARCHAR NOT NULL,
    prompt_set_id      VARCHAR NOT NULL,
    cohort             VARCHAR NOT NULL,  -- next_token | random (the pair's neuron)
    layer              INTEGER NOT NULL,
    neuron             INTEGER NOT NULL,
    head_layer         INTEGER NOT NULL,
    head               INTEGER NOT NULL,
    doc_id             VARCHAR NOT NULL,
    split              VARCHAR NOT NULL,
    active             BOOLEAN NOT NULL,  -- the head was active on this prompt (head_attributions)
    position           INTEGER NOT NULL,  -- source position, BOS = 0
    distance           INTEGER NOT NULL,  -- last position - position (0: the last token itself)
    token_id           BIGINT NOT NULL,
    token              VARCHAR NOT NULL,  -- the token decoded on its own
    attention          DOUBLE NOT NULL,   -- the head's attention weight from the last position
    gate_contribution  DOUBLE,            -- this position's part of gate_contribution (gated MLPs)
    in_contribution    DOUBLE NOT NULL,   -- this position's part of in_contribution
    contribution       DOUBLE NOT NULL,   -- this position's part of the head's score
    share              DOUBLE,            -- contribution / the head's score on this prompt
    rank               INTEGER NOT NULL,  -- 1 = the position that adds most to the neuron on this prompt
    head_score         DOUBLE NOT NULL,   -- the head's stored attribution score on this prompt
    -- The largest over score, in and gate (docs/quality.md#tolerances): the terms' sum against the head's
    -- output formed in the same pass, and that output against the stored attribution (another pass).
    identity_abs_error    DOUBLE NOT NULL,  -- |sum of the terms - the head's total from this pass's z|
    identity_rel_error    DOUBLE NOT NULL,  -- that over its rounding scale (sum_k |read_k| (sum_j A_j |v_jk| + |b_k|))
    attribution_abs_error DOUBLE NOT NULL,  -- |the head's total from this pass - its stored attribution|
    attribution_rel_error DOUBLE NOT NULL,  -- that over the most the head could contribute, |read| x |z - b|
    PRIMARY KEY (model_id, prompt_set_id, layer, neuron, head_layer, head, doc_id, position)
);

-- The counterfactual test: on each tested pair's active prompts, the top looked-up token and a control position
-- replaced by substitutes (averaged); one row per (pair, prompt, site).
CREATE TABLE IF NOT EXISTS lookup_interventions (  -- written per: model_id, prompt_set_id
    model_id          VARCHAR NOT NULL,
    prompt_set_id     VARCHAR NOT NULL,
    cohort            VARCHAR NOT NULL,
    layer             INTEGER NOT NULL,
    neuron            INTEGER NOT NULL,
    head_layer        INTEGER NOT NULL,
    head              INTEGER NOT NULL,
    doc_id            VARCHAR NOT NULL,
    split             VARCHAR NOT NULL,
    site              VARCHAR NOT NULL,  -- lookup (the position the head reads most, BOS excluded) | control (a random other one)
    position          INTEGER NOT NULL,
    distance          INTEGER NOT NULL,
    original_token_id BIGINT NOT NULL,
    n_substitutes     INTEGER NOT NULL,
    clean_act         DOUBLE NOT NULL,
    substituted_act   DOUBLE NOT NULL,   -- mean over the substitutes
    act_drop          DOUBLE NOT NULL,
    clean_score       DOUBLE NOT NULL,   -- the head's attribution
    substituted_score DOUBLE NOT NULL,
    score_drop        DOUBLE NOT NULL,
    score_drop_share  DOUBLE,            -- score_drop / clean_score
    clean_prob        DOUBLE NOT NULL,   -- probability of the neuron's token after the prompt
    substituted_prob  DOUBLE NOT NULL,
    prob_drop         DOUBLE NOT NULL,
    PRIMARY KEY (model_id, prompt_set_id, layer, neuron, head_layer, head, doc_id, site)
);

-- Per tested pair: one-sided paired Wilcoxon signed-rank test of the activation drop (looked-up > control),
-- Benjamini-Hochberg q-values within the cohort, confirmed at the run's false discovery rate.
CREATE TABLE IF NOT EXISTS lookup_tests (  -- written per: model_id, prompt_set_id
    model_id                      VARCHAR NOT NULL,
    prompt_set_id                 VARCHAR NOT NULL,
    cohort                        VARCHAR NOT NULL,
    layer                         INTEGER NOT NULL,
    neuron                        INTEGER NOT NULL,
    head_layer                    INTEGER NOT NULL,
    head                          INTEGER NOT NULL,
    n_prompts                     INTEGER NOT NULL,
    mean_act_drop_lookup          DOUBLE NOT NULL,
    mean_act_drop_control         DOUBLE NOT NULL,
    mean_score_drop_share_lookup  DOUBLE,
    mean_score_drop_share_control DOUBLE,
    mean_prob_drop_lookup         DOUBLE NOT NULL,
    mean_prob_drop_control        DOUBLE NOT NULL,
    wilcoxon_w                    DOUBLE,            -- NULL: fewer than 2 prompts or no difference
    p_value                       DOUBLE,
    q_value                       DOUBLE NOT NULL,   -- an untestable pair counts as p = 1
    confirmed                     BOOLEAN NOT NULL,  -- q_value <= the false discovery rate
    PRIMARY KEY (model_id, prompt_set_id, layer, neuron, head_layer, head)
);

-- The attention knockout (docs/method.md, "Why the head looks there"): on each tested pair's active prompts, the edge
-- from the last position to the top looked-up position blocked in the pair's head (its other weights renormalised),
-- and two controls: a control position of the same head, the looked-up position in a control head of the layer. On
-- the truncated prompt and the untruncated window it came from; one row per (pair, prompt, prompt kind, site).
CREATE TABLE IF NOT EXISTS lookup_knockouts (  -- written per: model_id, prompt_set_id
    model_id         VARCHAR NOT NULL,
    prompt_set_id    VARCHAR NOT NULL,
    cohort           VARCHAR NOT NULL,
    layer            INTEGER NOT NULL,
    neuron           INTEGER NOT NULL,
    head_layer       INTEGER NOT NULL,
    head             INTEGER NOT NULL,
    doc_id           VARCHAR NOT NULL,
    split            VARCHAR NOT NULL,
    prompt_kind      VARCHAR NOT NULL,  -- truncated (the exemplar's prompt) | untruncated (the document up to its end)
    site             VARCHAR NOT NULL,  -- lookup | control_position (same head) | control_head (same position)
    knocked_head     INTEGER NOT NULL,  -- the head whose edge was blocked (the pair's head but for control_head)
    position         INTEGER NOT NULL,  -- the blocked key position in this window (BOS at 0)
    distance         INTEGER NOT NULL,  -- tokens from it to the last position
    attention        DOUBLE NOT NULL,   -- the knocked head's weight on it, clean
    clean_act        DOUBLE NOT NULL,
    knocked_act      DOUBLE NOT NULL,
    act_drop         DOUBLE NOT NULL,
    clean_score      DOUBLE NOT NULL,   -- the pair's head's attribution
    knocked_score    DOUBLE NOT NULL,
    score_drop       DOUBLE NOT NULL,
    score_drop_share DOUBLE,            -- score_drop / clean_score
    clean_prob       DOUBLE NOT NULL,   -- probability of the neuron's token after the prompt
    knocked_prob     DOUBLE NOT NULL,
    prob_drop        DOUBLE NOT NULL,
    PRIMARY KEY (model_id, prompt_set_id, layer, neuron, head_layer, head, doc_id, prompt_kind, site)
);

-- Per (tested pair, prompt kind): one-sided paired Wilcoxon tests of the activation drop at the looked-up edge against
-- each control, Benjamini-Hochberg q-values within the (cohort, prompt kind); confirmed when both controls are beaten.
CREATE TABLE IF NOT EXISTS knockout_tests (  -- written per: model_id, prompt_set_id
    model_id                               VARCHAR NOT NULL,
    prompt_set_id                          VARCHAR NOT NULL,
    cohort                                 VARCHAR NOT NULL,
    layer                                  INTEGER NOT NULL,
    neuron                                 INTEGER NOT NULL,
    head_layer                             INTEGER NOT NULL,
    head                                   INTEGER NOT NULL,
    prompt_kind                            VARCHAR NOT NULL,
    n_prompts                              INTEGER NOT NULL,
    mean_act_drop_lookup                   DOUBLE NOT NULL,
    mean_act_drop_control_position         DOUBLE,   -- NULL: no control position could be formed
    mean_act_drop_control_head             DOUBLE,   -- NULL: every head of the layer is consistent for the neuron
    mean_score_drop_share_lookup           DOUBLE,
    mean_score_drop_share_control_position DOUBLE,
    mean_score_drop_share_control_head     DOUBLE,
    mean_prob_drop_lookup                  DOUBLE NOT NULL,
    p_value_position                       DOUBLE,   -- NULL: fewer than 2 prompts or no difference
    p_value_head                           DOUBLE,
    q_value_position                       DOUBLE NOT NULL,  -- an untestable pair counts as p = 1
    q_value_head                           DOUBLE NOT NULL,
    confirmed                              BOOLEAN NOT NULL, -- both q-values <= the false discovery rate
    PRIMARY KEY (model_id, prompt_set_id, layer, neuron, head_layer, head, prompt_kind)
);

-- QK attribution (docs/method.md, "Why the head looks there"): each tested pair's looked-up edges (last position t ->
-- position j) with the head's pre-softmax score split into (query component at t, key component at j) terms; per edge
-- the top query-side terms (q_c . k), key-side terms (q . k_c; the key side's token embedding always) and (query, key)
-- terms, with the edge's score, weight, margin and identity repeated on each row.
CREATE TABLE IF NOT EXISTS qk_attributions (  -- written per: model_id, prompt_set_id
    model_id            VARCHAR NOT NULL,
    prompt_set_id       VARCHAR NOT NULL,
    cohort              VARCHAR NOT NULL,
    layer               INTEGER NOT NULL,
    neuron              INTEGER NOT NULL,
    head_layer          INTEGER NOT NULL,
    head                INTEGER NOT NULL,
    doc_id              VARCHAR NOT NULL,
    split               VARCHAR NOT NULL,
    active              BOOLEAN NOT NULL,
    position            INTEGER NOT NULL,  -- j, the looked-up key position (BOS at 0, never decomposed)
    lookup_rank         INTEGER NOT NULL,  -- 1 = the position the head reads most (BOS excluded)
    token_id            BIGINT NOT NULL,   -- the token at j
    attention           DOUBLE NOT NULL,   -- the head's weight on j from t
    score               DOUBLE NOT NULL,   -- s(t, j) = q_t . k_j x scaling, before any soft-cap
    margin              DOUBLE,            -- s minus the best other non-BOS position's score; NULL: no other
    side                VARCHAR NOT NULL,  -- query | key | pair
    component           VARCHAR NOT NULL,  -- embed | pos_embed | L{s}H{h} | MLP{s} | bias (the query side's, for pairs)
    key_component       VARCHAR,           -- pairs only: the key side's component
    term                DOUBLE NOT NULL,
    share               DOUBLE,            -- term / score
    rank                INTEGER NOT NULL,  -- 1 = the largest |term| on this side of the edge
    identity_abs_error  DOUBLE NOT NULL,   -- |sum of every term - s from this pass's q and k|
    identity_rel_error  DOUBLE NOT NULL,   -- that over |q| |k| x scaling
    attention_abs_error DOUBLE NOT NULL,   -- |softmax of the decomposed scores at j - the model's weight|
    PRIMARY KEY (model_id, prompt_set_id, layer, neuron, head_layer, head, doc_id, position, side, rank)
);

-- step 6 of docs/method.md: one explanation per (pair, explainer); the contrastive reference always, an LLM's where run.
CREATE TABLE IF NOT EXISTS explanations (  -- written per: model_id, prompt_set_id, explainer
    explanation_id    VARCHAR NOT NULL,   -- hash of (model, prompt set, pair, explainer, template version)
    model_id          VARCHAR NOT NULL,
    prompt_set_id     VARCHAR NOT NULL,
    explainer         VARCHAR NOT NULL,   -- contrastive | local:<model_id> | openai:<model name>
    backend           VARCHAR NOT NULL,   -- contrastive | local | openai
    llm_model         VARCHAR,
    template_version  VARCHAR NOT NULL,   -- template name @ content hash (log-odds for contrastive)
    cohort            VARCHAR NOT NULL,   -- next_token | random (baseline neuron)
    layer             INTEGER NOT NULL,
    neuron            INTEGER NOT NULL,
    head_layer        INTEGER NOT NULL,
    head              INTEGER NOT NULL,
    token             VARCHAR NOT NULL,   -- the neuron's token, appended to every prompt shown
    status            VARCHAR NOT NULL,   -- ok | empty | refused | comparison (compares the groups: no rule to check) | error | budget_exhausted
    explanation       VARCHAR,
    features          JSON,               -- contrastive: feature -> smoothed log-odds (its classifier)
    error             VARCHAR,
    n_active_shown    INTEGER NOT NULL,
    n_inactive_shown  INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,   -- 0 when the answer came from the cache
    completion_tokens INTEGER NOT NULL,
    cached            BOOLEAN NOT NULL,
    PRIMARY KEY (explanation_id)
);

-- docs/method.md, "Scoring explanations": each explanation scored on held-out prompts by each scorer, given only the
-- explanation. One row per explanation, scorer and baseline; a scorer fills the measures it gives.
CREATE TABLE IF NOT EXISTS explanation_scores (  -- written per: model_id, prompt_set_id, explainer
    explanation_id    VARCHAR NOT NULL,
    scorer            VARCHAR NOT NULL,   -- detection (Yes/No per prompt: the LLM, or a reference's features) | embedding (cosine
                                          -- under all-MiniLM-L6-v2, no LLM) | simulation (the LLM's 0-9 rating per prompt)
    split             VARCHAR NOT NULL,   -- heldout
    baseline          VARCHAR NOT NULL,   -- none (the pair's own prompts) | shuffled (another pair's prompts)
    model_id          VARCHAR NOT NULL,
    prompt_set_id     VARCHAR NOT NULL,
    explainer         VARCHAR NOT NULL,
    cohort            VARCHAR NOT NULL,
    layer             INTEGER NOT NULL,
    neuron            INTEGER NOT NULL,
    head_layer        INTEGER NOT NULL,
    head              INTEGER NOT NULL,
    target_layer      INTEGER NOT NULL,   -- whose held-out prompts and ground truth (the pair itself unless shuffled)
    target_neuron     INTEGER NOT NULL,
    target_head_layer INTEGER NOT NULL,
    target_head       INTEGER NOT NULL,
    status            VARCHAR NOT NULL,   -- scored | not_scored
    reason            VARCHAR,            -- why not scored (an explanation that is not ok: its status)
    n_positive        INTEGER NOT NULL,   -- held-out prompts where the head is active
    n_negative        INTEGER NOT NULL,
    n_answered        INTEGER NOT NULL,   -- usable answers (detection, simulation) or prompts embedded
    n_malformed       INTEGER NOT NULL,   -- empty, refused or unreadable answers
    n_errors          INTEGER NOT NULL,   -- calls that failed after retries
    tp INTEGER, fn INTEGER, tn INTEGER, fp INTEGER,  -- detection: the Yes/No answers against the truth
    e_score           DOUBLE,             -- detection: Head Explanation Score, balanced accuracy 1/2 (TP/(TP+FN) + TN/(TN+FP)) at P(Yes) 0.5
    calibrated_e      DOUBLE,             -- balanced accuracy at the threshold that best separates the pair's explain prompts
    threshold         DOUBLE,             -- that threshold (P(Yes), a reference's log-odds, or a cosine)
    auc               DOUBLE,             -- AUROC, active against inactive, of P(Yes) (detection), the cosine (embedding), the rating (simulation)
    correlation       DOUBLE,             -- simulation: Spearman correlation of the ratings with the head's real score, all held-out prompts
    pearson           DOUBLE,             -- simulation: the same, Pearson
    PRIMARY KEY (explanation_id, scorer, split, baseline)
);

-- docs/method.md, "Scoring explanations": per model, prompt set, explainer, scorer and measure, the next-token pairs'
-- scores against each baseline.
CREATE TABLE IF NOT EXISTS explanation_tests (  -- written per: model_id, prompt_set_id, explainer
    model_id      VARCHAR NOT NULL,
    prompt_set_id VARCHAR NOT NULL,
    explainer     VARCHAR NOT NULL,
    scorer        VARCHAR NOT NULL,  -- detection | embedding | simulation
    measure       VARCHAR NOT NULL,  -- e_score | calibrated_e | auc | correlation (columns of explanation_scores)
    baseline      VARCHAR NOT NULL,  -- random_neurons | shuffled
    chance        DOUBLE NOT NULL,   -- the measure of an explanation that says nothing (0.5; correlation 0)
    n             INTEGER NOT NULL,  -- scored next-token pairs
    mean          DOUBLE,
    ci_low        DOUBLE,            -- percentile bootstrap 95% CI of mean (10,000 resamples, seeded; n >= 2)
    ci_high       DOUBLE,
    std           DOUBLE,
    skew          DOUBLE,
    skew_z        DOUBLE,            -- scipy.stats.skewtest (n >= 8)
    skew_p        DOUBLE,
    n_baseline    INTEGER NOT NULL,  -- random-neuron pairs scored, or shuffled scores
    mean_baseline DOUBLE,
    baseline_ci_low  DOUBLE,         -- the same bootstrap 95% CI of mean_baseline (n_baseline >= 2)
    baseline_ci_high DOUBLE,
    std_baseline  DOUBLE,
    difference    DOUBLE,            -- mean - mean_baseline (random_neurons); mean of own - shuffled per explanation (shuffled)
    difference_ci_low  DOUBLE,       -- bootstrap 95% CI of the difference (the two cohorts resampled apart; shuffled: the pairs)
    difference_ci_high DOUBLE,
    permutation_p DOUBLE,            -- two-sided permutation test of the difference (labels exchanged; shuffled: signs flipped),
                                     -- 10,000 permutations seeded, exact when there are fewer
    mw_u          DOUBLE,            -- two-sided Mann-Whitney U test, own vs the baseline
    mw_p          DOUBLE,
    n_paired         INTEGER,        -- shuffled only (NULL for random_neurons): explanations scored on both their own and shuffled prompts
    wilcoxon_w       DOUBLE,         -- two-sided Wilcoxon signed-rank test of the paired differences (n_paired >= 2, one non-zero)
    wilcoxon_p       DOUBLE,
    PRIMARY KEY (model_id, prompt_set_id, explainer, scorer, measure, baseline)
);

-- Every LLM call made (answers and failures): the cache (by cache_key) and the run budget (by run_id).
-- No endpoint address and no key is ever stored.
CREATE TABLE IF NOT EXISTS llm_calls (  -- written per: nothing: appended, a file per batch
    cache_key         VARCHAR NOT NULL,  -- hash of (pair, examples, backend, model, template version)
    run_id            VARCHAR NOT NULL,
    backend           VARCHAR NOT NULL,
    llm_model         VARCHAR NOT NULL,
    template_version  VARCHAR NOT NULL,
    purpose           VARCHAR NOT NULL,  -- explain | classify | simulate
    status            VARCHAR NOT NULL,  -- ok | malformed | refused | empty | comparison | error | budget_exhausted
    response          VARCHAR,
    answer            BOOLEAN,           -- classify: Yes/No
    p_yes             DOUBLE,            -- classify: P(Yes) / (P(Yes) + P(No)) where the backend gives probabilities
    rating            DOUBLE,            -- simulate: the expected 0-9 rating over the digits' probabilities, else the parsed digit
    error             VARCHAR,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    seconds           DOUBLE NOT NULL,
    created_at        TIMESTAMP NOT NULL DEFAULT current_timestamp
);

-- What each asset last computed for each scope, so unchanged inputs skip the work.
CREATE TABLE IF NOT EXISTS asset_versions (  -- written per: asset, scope
    asset         VARCHAR NOT NULL,
    scope         VARCHAR NOT NULL,      -- model_id, prompt_set_id or model_id/prompt_set_id
    data_version  VARCHAR NOT NULL,      -- hash of code_version, settings and input versions
    code_version  VARCHAR NOT NULL,
    stats         JSON,
    complete      BOOLEAN NOT NULL DEFAULT true,  -- false: a run stopped early (LLM budget, failed calls); recomputed next time
    updated_at    TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (asset, scope)
);
