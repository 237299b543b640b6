-- A thumbnail per catalogued image, as sql/40_thumbnails.sql (macros/pipeline.sql): rendered
-- once, and again when its file was read again; files without pixel data (reports, RT plans)
-- get a row with reason no_pixel_data, so they are not tried again. A thumbnail whose file is
-- deleted (or no longer reads) gets its row again with deleted_at set. Incremental like
-- instances: new partitions, then the older rows of each path dropped (pixels_supersede).
{{
  config(
    materialized='incremental',
    incremental_strategy='append',
    file_format='parquet',
    partition_by=['ingest_run'],
    on_schema_change='fail',
    post_hook="{{ pixels_supersede(this) }}",
  )
}}

{%- set p = pixels_params() %}
{%- set thumbnails = this if is_incremental() else '(' ~ pipeline_empty_thumbnails() ~ ')' %}

WITH pixels_current_files AS (
  {{ pipeline_current_files(p, catalog=ref('instances')) }}
),

pixels_current_thumbnails AS (
  {{ pipeline_current_thumbnails(p, thumbnails=thumbnails) }}
),

pixels_new_images AS (
  {{ pipeline_new_images(p) }}
),

pixels_deleted_thumbnails AS (
  {{ pipeline_deleted_thumbnails(p) }}
)

SELECT * FROM (
  {{ pipeline_thumbnail_tombstones(p) }}
)
UNION ALL
SELECT * FROM (
  {{ pipeline_thumbnails(p) }}
)
