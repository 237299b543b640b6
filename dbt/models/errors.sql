-- Failed files, every stage, as the pipeline's object_errors (sql/90_views.sql, by way of
-- macros/pipeline.sql). A view: it reads the tables at query time.
{{ pipeline_object_errors(pixels_params(), catalog=ref('instances'), thumbnails=ref('thumbnails')) }}
