-- Instances held by several files with different content, as the pipeline's
-- instance_conflicts (sql/90_views.sql, by way of macros/pipeline.sql). A view.
{{ pipeline_instance_conflicts(pixels_params(), copies=ref('instance_copies')) }}
