-- The DuckDB schema of lookups: the one place DDL lives. Applied on every write connection; idempotent.
-- Keys: model_id = readable name + weights fingerprint; prompt_set_id = content hash of the documents.
-- Writes replace exactly the rows of their key in one transaction (see pipeline/store.py).

CREATE TABLE IF NOT EXISTS models (
    model_id      VARCHAR PRIMARY KEY,   -- e.g. smollm2-135m-instruct@3f2a9c0d1e4b
    name          VARCHAR NOT NULL,      -- what the user asked for
    origin        VARCHAR NOT NULL,      -- embedded-gguf | huggingface | local
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

CREATE TABLE IF NOT EXISTS neurons (
    model_id      VARCHAR NOT NULL,
    layer         INTEGER NOT NULL,
    neuron        INTEGER NOT NULL,
    token_id      BIGINT NOT NULL,       -- argmax_t W_out[layer][neuron] . W_U[:, t]
    token         VARCHAR NOT NULL,
    score         DOUBLE NOT NULL,       -- that max
    zscore        DOUBLE NOT NULL,       -- (max - mean) / std over the vocabulary
    vocab_mean    DOUBLE NOT NULL,
    vocab_std     DOUBLE NOT NULL,
    top_token_ids BIGINT[] NOT NULL,
    top_tokens    VARCHAR[] NOT NULL,
    top_scores    DOUBLE[] NOT NULL,
    qualifies     BOOLEAN NOT NULL,      -- its token starts a word, is long enough and not denied
    layer_rank    INTEGER NOT NULL,      -- rank by score among the layer's qualifying neurons; -1 if not qualifying
    selected      BOOLEAN NOT NULL,      -- top N per layer in the last K layers
    PRIMARY KEY (model_id, layer, neuron)
);

CREATE TABLE IF NOT EXISTS prompt_sets (
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

CREATE TABLE IF NOT EXISTS documents (
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

CREATE TABLE IF NOT EXISTS neuron_exemplars (
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

-- What each asset last computed for each scope, so unchanged inputs skip the work.
CREATE TABLE IF NOT EXISTS asset_versions (
    asset         VARCHAR NOT NULL,
    scope         VARCHAR NOT NULL,      -- model_id, prompt_set_id or model_id/prompt_set_id
    data_version  VARCHAR NOT NULL,      -- hash of code_version, settings and input versions
    code_version  VARCHAR NOT NULL,
    stats         JSON,
    updated_at    TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (asset, scope)
);
