-- Referential integrity (asset check documents_valid): every document belongs to a recorded prompt set.
-- Parameters: $prompt_set_id. One row per document; every boolean column must be true (see pipeline/quality.py).
SELECT d.prompt_set_id, d.doc_id,
       p.prompt_set_id IS NOT NULL AS prompt_set_found
FROM documents d
LEFT JOIN prompt_sets p ON p.prompt_set_id = d.prompt_set_id
WHERE d.prompt_set_id = $prompt_set_id
ORDER BY d.doc_index;
