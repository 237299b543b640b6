-- One row per study, as the pipeline's study_catalog (sql/90_views.sql, by way of
-- macros/pipeline.sql). A view.
{{ pipeline_study_catalog(pixels_params(), catalog=ref('instances')) }}
