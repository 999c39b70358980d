-- Asset metadata of prompt_set: its first five documents.
SELECT doc_id, split, title, left(text, 80) AS text
FROM documents
WHERE prompt_set_id = $prompt_set_id
ORDER BY doc_index
LIMIT 5
