-- The latest recorded answer per cache key among $keys, of the statuses that are answers (not failures).
SELECT cache_key, status, response, answer, p_yes, rating, prompt_tokens, completion_tokens
FROM llm_calls
WHERE cache_key IN (SELECT unnest($keys)) AND list_contains($statuses, status)
QUALIFY row_number() OVER (PARTITION BY cache_key ORDER BY created_at DESC) = 1
