-- One row per series, as the pipeline's series_catalog (sql/90_views.sql, by way of
-- macros/pipeline.sql). A view.
{{ pipeline_series_catalog(pixels_params(), catalog=ref('instances')) }}
