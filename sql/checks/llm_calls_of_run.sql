-- The LLM calls one Dagster run made (asset check explanations_valid): explain and classify calls alike.
-- Parameters: $run_id. One row per call.
SELECT cache_key, run_id, backend, llm_model, template_version, purpose, status, prompt_tokens, completion_tokens, seconds
FROM llm_calls
WHERE run_id = $run_id
ORDER BY created_at;
