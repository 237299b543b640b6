-- Every live instance with the rule that picks, among files holding the same SOPInstanceUID,
-- the one served (the copy catalogued first, then the first path), as the pipeline's
-- instance_copies (sql/90_views.sql, by way of macros/pipeline.sql). A view.
{{ pipeline_instance_copies(pixels_params(), catalog=ref('instances')) }}
