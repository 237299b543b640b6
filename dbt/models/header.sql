-- The typed header table, as the pipeline's object_header: one row per live instance, a column
-- per attribute found in any header (typed by its VR), OtherElements for the rest; made by
-- sql/50_header.sql's own statements (macros/pipeline.sql) from the headers in instances, run
-- in order in one session (materialization pixels_script: a new attribute adds a column).
-- Incremental like instances: new and changed headers typed, deleted ones marked, then each
-- path's older rows dropped (pixels_supersede).
{{
  config(
    materialized='pixels_script',
    post_hook="{{ pixels_supersede(this) }}",
  )
}}

{{ pipeline_header_statements(pixels_params(), catalog=ref('instances'), header=this) }}
