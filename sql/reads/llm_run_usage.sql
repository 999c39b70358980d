-- LLM calls and tokens one run has used so far (the run budget counts them).
SELECT count(*) AS calls, coalesce(sum(prompt_tokens + completion_tokens), 0) AS tokens
FROM llm_calls
WHERE run_id = $run_id
