-- Step 1: list every file under ${path} with list_files: each file gets a row, zero-byte and
-- _-named files included; an unreadable folder, a dangling link or a pipe gets a row with its
-- reason. The path is taken literally (never a glob). Only names, sizes and times are read.
-- Parameters: path (required), glob (default: * — DICOM files often have no extension).

-- The catalog table: one row per file, good or bad. Each run appends its rows as one new
-- partition (ingest_run), which the metastore registers only once all its files are written:
-- a run's rows appear all at once or not at all, whatever kills it.
-- No USING clause: the table takes spark.sql.sources.default (parquet here, Delta on Databricks).
CREATE TABLE IF NOT EXISTS object_catalog (
  rowId BIGINT,
  path STRING,
  modificationTime TIMESTAMP,
  length BIGINT,
  relative_path STRING,
  local_path STRING,
  extension STRING,
  path_tags ARRAY<STRING>,
  meta VARIANT,
  StudyInstanceUID STRING,
  SeriesInstanceUID STRING,
  SOPInstanceUID STRING,
  SOPClassUID STRING,
  TransferSyntaxUID STRING,
  PatientID STRING,
  PatientName STRING,
  AccessionNumber STRING,
  Modality STRING,
  BodyPartExamined STRING,
  Manufacturer STRING,
  StudyDate DATE,
  StudyDescription STRING,
  SeriesDescription STRING,
  SeriesNumber INT,
  InstanceNumber INT,
  `Rows` INT,
  `Columns` INT,
  NumberOfFrames INT,
  meta_error_reason STRING,
  meta_error_message STRING,
  ingested_at TIMESTAMP,
  ingest_run STRING
)
PARTITIONED BY (ingest_run);

-- Thumbnails are rendered by the optional step 40_thumbnails.sql, one row per image.
CREATE TABLE IF NOT EXISTS object_thumbnails (
  path STRING,
  thumbnail BINARY,
  thumbnail_size INT,
  thumbnail_error_reason STRING,
  thumbnail_error_message STRING,
  created_at TIMESTAMP,
  ingest_run STRING
)
PARTITIONED BY (ingest_run);

-- The files this run reads, listed once into a working table that 20_meta.sql drops when done
-- (a view would list the folder again for every statement naming it). A catalogued file is not
-- read again (DICOM files are immutable: a changed image gets new UIDs), except a failed one:
-- it is read again when its size or modification time changed, or when it failed for a reason
-- that may pass (not_found, unreadable); its new row then replaces the old one.
DROP TABLE IF EXISTS pixels_new_files;
CREATE TABLE pixels_new_files AS
SELECT
  l.path,
  l.modificationTime,
  l.length,
  l.reason AS listing_reason,
  l.message AS listing_message
FROM list_files('${path}', glob => '${glob:-*}') AS l
LEFT ANTI JOIN object_catalog AS c
  ON c.path = l.path
  AND (
    c.meta_error_reason IS NULL
    OR (
      c.length <=> l.length
      AND c.modificationTime <=> l.modificationTime
      AND c.meta_error_reason NOT IN ('not_found', 'unreadable')
    )
  );

SELECT count(*) AS files_to_read FROM pixels_new_files;
