-- The explanations of a partition made by the given explainers.
SELECT *
FROM explanations
WHERE model_id = $model_id AND prompt_set_id = $prompt_set_id AND list_contains($explainers, explainer)
