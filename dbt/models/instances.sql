-- One row per file, as the pipeline's object_catalog, made by the pipeline's own statements
-- (macros/pipeline.sql, generated from sql/10_catalog.sql, 20_meta.sql and 30_deleted.sql):
-- the header as VARIANT, the attributes people filter on as typed columns, and for a file
-- that is not readable DICOM a NULL meta with the reason. A zip archive's members are listed
-- and read in place (zip://<member>::<archive> paths), as `pixels-sql run` reads them.
--
-- Incremental, as the pipeline: a run reads the files that are new, changed (length or
-- modificationTime), failed for a reason that may pass, or written by an older dicom_meta JSON
-- version; a file gone from the folder gets its row again with deleted_at set. These rows are
-- appended as new partitions (ingest_run: the time of the run, '-failed' / '-deleted' for those
-- rows); the post-hook then drops each path's older rows (pixels_supersede), so that the table
-- holds one row per path, as the pipeline's upkeep (pixels_sql.tables.supersede) leaves it.
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
{#- The table itself; on the first run (or --full-refresh), an empty one of its columns. #}
{%- set catalog = this if is_incremental() else '(' ~ pipeline_empty_catalog() ~ ')' %}

WITH pixels_listed AS (
  SELECT * FROM {{ ref('files') }}
),

pixels_listing AS (
  {{ pipeline_listing(p, catalog=catalog) }}
),

pixels_read AS (
  {{ pipeline_read(p, catalog=catalog) }}
),

pixels_deleted_paths AS (
  {{ pipeline_deleted_paths(p, catalog=catalog) }}
),

pixels_deleted_files AS (
  {{ pipeline_deleted_files(p, catalog=catalog) }}
)

SELECT * FROM (
  {{ pipeline_meta(p, catalog=catalog) }}
)
UNION ALL
SELECT * FROM pixels_deleted_files
