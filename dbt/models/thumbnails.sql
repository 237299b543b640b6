-- A thumbnail per catalogued image, rendered once, as sql/40_thumbnails.sql: incremental like
-- instances (only instances without a thumbnail row are rendered). Files without pixel data
-- (reports, RT plans) get a row with reason no_pixel_data, so they are not tried again.
{{
  config(
    materialized='incremental',
    incremental_strategy='append',
    file_format='parquet',
    partition_by=['ingest_run'],
    on_schema_change='fail',
  )
}}

{%- set size = var('thumbnail_size') | int %}

SELECT
  path,
  result.thumbnail AS thumbnail,
  {{ size }} AS thumbnail_size,
  result.reason AS thumbnail_error_reason,
  result.message AS thumbnail_error_message,
  current_timestamp() AS created_at,
  '{{ invocation_id }}' AS ingest_run
FROM (
  SELECT c.path, dicom_thumbnail_result(c.path, {{ size }}) AS result
  FROM {{ ref('instances') }} AS c
  {%- if is_incremental() %}
  LEFT ANTI JOIN {{ this }} AS t
    ON t.path = c.path
  {%- endif %}
  -- has a header (meta is NULL exactly when a reason is set): the small column is read
  WHERE c.meta_error_reason IS NULL
)
