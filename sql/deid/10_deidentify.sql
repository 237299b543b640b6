-- De-identification of a catalogued database (docs/deidentification.md): the live instances of
-- ${source} that the predicate ${where} selects (a cohort, over object_header's typed columns)
-- are de-identified into ${destination} (a folder per pseudonymous patient, a file per new SOP
-- Instance UID) and recorded in ${mapping}.deid_instances, a database the de-identified copy
-- does not reference: source path, original and new SOP Instance UID, pseudonymous Patient ID,
-- date shift, every UID replaced, the pixels blacked out (where, and the rule or OCR that found
-- them). `pixels-sql deidentify` then ingests the destination into
-- its own database.
-- Incremental: an instance whose catalog row is new or changed since its mapping row is done
-- again; one deleted, no longer readable or no longer in the cohort has its copy removed and a
-- row with removed_at. Each run's rows land as one partition (all or nothing); copies are
-- written whole or not at all and are the same bytes in every run, so a run killed anywhere
-- and run again gives the clean run's files and rows.
-- Parameters: source (database), destination (folder), mapping (database), options
-- (comma-separated option names, default none), where (a predicate, default true).

CREATE DATABASE IF NOT EXISTS ${mapping};

CREATE TABLE IF NOT EXISTS ${mapping}.deid_instances (
  source_path STRING,
  source_ingested_at TIMESTAMP,
  original_sop_instance_uid STRING,
  sop_instance_uid STRING,
  patient_id STRING,
  shift_days INT,
  uids MAP<STRING, STRING>,
  output_path STRING,
  reason STRING,
  message STRING,
  cleaned_regions ARRAY<STRUCT<x: INT, y: INT, width: INT, height: INT, source: STRING>>,
  deidentified_at TIMESTAMP,
  removed_at TIMESTAMP,
  deid_run STRING
)
PARTITIONED BY (deid_run);

USE ${source};

-- The cohort: each live instance's newest typed row, where the predicate holds. The predicate
-- is the user's own SQL over object_header's columns.
EXECUTE IMMEDIATE concat(
  'CREATE OR REPLACE TEMPORARY VIEW pixels_deid_cohort AS ',
  'SELECT path, ingested_at FROM (',
  'SELECT *, row_number() OVER (PARTITION BY path ORDER BY ingest_run DESC) AS pixels_newest ',
  'FROM object_header) AS h ',
  'WHERE pixels_newest = 1 AND deleted_at IS NULL AND (',
  '${where:-true}',
  ')'
);

CREATE OR REPLACE TEMPORARY VIEW pixels_deid_current AS
SELECT *
FROM (
  SELECT *, row_number() OVER (PARTITION BY source_path ORDER BY deid_run DESC) AS newest
  FROM ${mapping}.deid_instances
)
WHERE newest = 1 AND removed_at IS NULL;

-- Instances to de-identify: in the cohort, with no mapping row for their catalog row.
CREATE OR REPLACE TEMPORARY VIEW pixels_deid_pending AS
SELECT c.path, c.ingested_at
FROM pixels_deid_cohort AS c
LEFT JOIN pixels_deid_current AS m ON m.source_path = c.path
WHERE m.source_path IS NULL OR m.source_ingested_at != c.ingested_at;

-- Mapping rows whose instance left the cohort (deleted, unreadable, no longer selected).
CREATE OR REPLACE TEMPORARY VIEW pixels_deid_gone AS
SELECT m.*
FROM pixels_deid_current AS m
LEFT ANTI JOIN pixels_deid_cohort AS c ON c.path = m.source_path;

-- The counts in one pass (one job, not one per scalar subquery), by the conditions of the two
-- views above (a path has one row in each side).
SELECT deid_pending, deid_gone, deid_pending + deid_gone AS deid_changes
FROM (
  SELECT
    count_if(
      c.path IS NOT NULL
      AND (m.source_path IS NULL OR m.source_ingested_at != c.ingested_at)
    ) AS deid_pending,
    count_if(m.source_path IS NOT NULL AND c.path IS NULL) AS deid_gone
  FROM pixels_deid_cohort AS c
  FULL OUTER JOIN pixels_deid_current AS m ON m.source_path = c.path
);

-- Copies of changed and gone instances removed first: a changed instance's new copy may have
-- another name (its pseudonymous patient or its UID changed), and is written next.
-- pixels-sql: skip if deid_changes = 0
SELECT count_if(NOT dicom_deidentify_remove(m.output_path, '${destination}')) AS deid_kept_outside
FROM pixels_deid_current AS m
LEFT JOIN pixels_deid_pending AS p ON p.path = m.source_path
LEFT JOIN pixels_deid_gone AS g ON g.source_path = m.source_path
WHERE m.output_path IS NOT NULL AND (p.path IS NOT NULL OR g.source_path IS NOT NULL);

-- One partition per run: new copies, and the gone instances marked.
-- pixels-sql: skip if deid_changes = 0
INSERT INTO ${mapping}.deid_instances
SELECT
  path AS source_path,
  ingested_at AS source_ingested_at,
  r.original_sop_instance_uid,
  r.sop_instance_uid,
  r.patient_id,
  r.shift_days,
  r.uids,
  r.output_path,
  r.reason,
  r.message,
  r.cleaned_regions,
  current_timestamp() AS deidentified_at,
  CAST(NULL AS TIMESTAMP) AS removed_at,
  date_format(current_timestamp(), 'yyyyMMddHHmmssSSS') AS deid_run
FROM (
  SELECT
    path,
    ingested_at,
    dicom_deidentify_write(
      path, '${destination}', 'basic', filter(split('${options:-}', ','), o -> o != '')
    ) AS r
  FROM pixels_deid_pending
)
UNION ALL
SELECT
  source_path,
  source_ingested_at,
  original_sop_instance_uid,
  sop_instance_uid,
  patient_id,
  shift_days,
  uids,
  output_path,
  reason,
  message,
  cleaned_regions,
  deidentified_at,
  current_timestamp() AS removed_at,
  date_format(current_timestamp(), 'yyyyMMddHHmmssSSS') AS deid_run
FROM pixels_deid_gone;

-- The mapping as a user reads it: each instance's newest row.
CREATE OR REPLACE VIEW ${mapping}.deid_mapping AS
SELECT
  source_path, original_sop_instance_uid, sop_instance_uid, patient_id, shift_days, uids,
  output_path, reason, message, cleaned_regions, deidentified_at
FROM (
  SELECT *, row_number() OVER (PARTITION BY source_path ORDER BY deid_run DESC) AS newest
  FROM ${mapping}.deid_instances
)
WHERE newest = 1 AND removed_at IS NULL;

-- Every UID replaced, original -> new (the same pair in every instance that holds it).
CREATE OR REPLACE VIEW ${mapping}.deid_uids AS
SELECT DISTINCT original, new
FROM (SELECT explode(uids) AS (original, new) FROM ${mapping}.deid_mapping);
