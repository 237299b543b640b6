-- One row per file, as the pipeline's object_catalog (sql/20_meta.sql): the header as VARIANT,
-- the attributes people filter on as typed columns, and for a file that is not readable DICOM
-- a NULL meta with the reason (so it is not read again). DICOM instances are the rows with a
-- meta; errors.sql lists the others.
--
-- Incremental: a run reads only files whose path is not in the table yet (DICOM files are
-- immutable: a changed image gets new UIDs). dbt-spark's `append` strategy inserts this query's
-- rows, which the anti join below limits to new files; `merge` would need Delta tables.
-- Unlike the pipeline, a failed file is not retried when it changes: `--full-refresh` reads
-- every file again. Each run's rows land in a partition of their own (ingest_run = dbt's
-- invocation id), as the pipeline's runs do.
{{
  config(
    materialized='incremental',
    incremental_strategy='append',
    file_format='parquet',
    partition_by=['ingest_run'],
    on_schema_change='fail',
  )
}}

{%- set root = pixels_path() %}

WITH new_files AS (
  SELECT
    l.path,
    l.modificationTime,
    l.length,
    l.reason AS listing_reason,
    l.message AS listing_message
  FROM {{ ref('files') }} AS l
  {%- if is_incremental() %}
  LEFT ANTI JOIN {{ this }} AS c
    ON c.path = l.path
  {%- endif %}
),

-- One read per file: dicom_meta_result never fails (a bad file gives a reason). A NULL path is
-- not opened: a listing row with a reason (a pipe would block the reader).
read AS (
  SELECT
    *,
    regexp_replace(path, '^file:(//)?', '') AS local_path,
    dicom_meta_result(CASE WHEN listing_reason IS NULL THEN path END) AS result
  FROM new_files
),

parsed AS (
  SELECT *, try_parse_json(result.meta) AS meta
  FROM read
),

outcome AS (
  SELECT
    *,
    CASE
      WHEN listing_reason IS NOT NULL THEN listing_reason
      WHEN result.reason IS NOT NULL THEN result.reason
      WHEN meta IS NULL THEN 'too_large'
    END AS meta_error_reason,
    CASE
      WHEN listing_reason IS NOT NULL THEN listing_message
      WHEN result.reason IS NOT NULL THEN result.message
      WHEN meta IS NULL THEN concat(
        'DICOM JSON of ', length(result.meta), ' characters does not fit a VARIANT value'
      )
      -- A header read with a warning ('trailing_bytes: ...'): the reason stays NULL.
      ELSE result.message
    END AS meta_error_message
  FROM parsed
)

SELECT
  xxhash64(path) AS rowId,
  path,
  modificationTime,
  length,
  CASE
    WHEN startswith(local_path, {{ pixels_string(root ~ '/') }})
      THEN substr(local_path, length({{ pixels_string(root) }}) + 2)
    WHEN startswith(path, {{ pixels_string(root ~ '/') }})
      THEN substr(path, length({{ pixels_string(root) }}) + 2)
    ELSE local_path
  END AS relative_path,
  local_path,
  lower(regexp_extract(local_path, '\\.([^./]+)$', 1)) AS extension,
  filter(split(local_path, '[/\\\\._\\s-]+'), part -> part != '') AS path_tags,
  meta,
  {{ dicom_tag('meta', 'StudyInstanceUID') }} AS StudyInstanceUID,
  {{ dicom_tag('meta', 'SeriesInstanceUID') }} AS SeriesInstanceUID,
  {{ dicom_tag('meta', 'SOPInstanceUID') }} AS SOPInstanceUID,
  {{ dicom_tag('meta', 'SOPClassUID') }} AS SOPClassUID,
  {{ dicom_tag('meta', 'TransferSyntaxUID') }} AS TransferSyntaxUID,
  {{ dicom_tag('meta', 'PatientID') }} AS PatientID,
  {{ dicom_tag('meta', 'PatientName') }} AS PatientName,
  {{ dicom_tag('meta', 'AccessionNumber') }} AS AccessionNumber,
  {{ dicom_tag('meta', 'Modality') }} AS Modality,
  {{ dicom_tag('meta', 'BodyPartExamined') }} AS BodyPartExamined,
  {{ dicom_tag('meta', 'Manufacturer') }} AS Manufacturer,
  {{ dicom_date('meta', 'StudyDate') }} AS StudyDate,
  {{ dicom_tag('meta', 'StudyDescription') }} AS StudyDescription,
  {{ dicom_tag('meta', 'SeriesDescription') }} AS SeriesDescription,
  {{ dicom_tag('meta', 'SeriesNumber', 'int') }} AS SeriesNumber,
  {{ dicom_tag('meta', 'InstanceNumber', 'int') }} AS InstanceNumber,
  {{ dicom_tag('meta', 'Rows', 'int') }} AS `Rows`,
  {{ dicom_tag('meta', 'Columns', 'int') }} AS `Columns`,
  {{ dicom_tag('meta', 'NumberOfFrames', 'int') }} AS NumberOfFrames,
  meta_error_reason,
  meta_error_message,
  current_timestamp() AS ingested_at,
  '{{ invocation_id }}' AS ingest_run
FROM outcome
