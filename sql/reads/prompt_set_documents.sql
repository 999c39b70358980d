-- A prompt set's documents in order, with their split.
SELECT doc_index, doc_id, split, text
FROM documents
WHERE prompt_set_id = $prompt_set_id
ORDER BY doc_index
