-- Each corpus that built the prompt set, with what it read, skipped and dropped (corpora with the same
-- passages share one prompt set; each keeps its own counts). Parameters: $prompt_set_id.
SELECT
    source, n_read, skipped_empty, skipped_undecodable, skipped_malformed, duplicates_dropped, beyond_slice, control_stripped,
    corpus_hash, recorded_at
FROM corpus_reads
WHERE prompt_set_id = $prompt_set_id
ORDER BY recorded_at, source;
