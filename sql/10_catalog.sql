-- Step 1: list the files under ${path} with Spark's own file index. Only path, size and
-- modification time are read: the `content` column of binaryFile is never selected.
-- Parameters: path (required), glob (default: * — DICOM files often have no extension).
CREATE OR REPLACE TEMPORARY VIEW pixels_listing AS
SELECT
  path,
  modificationTime,
  length
FROM read_files(
  '${path}',
  format => 'binaryFile',
  recursiveFileLookup => true,
  pathGlobFilter => '${glob:-*}'
);

-- The catalog table: one row per file, good or bad. Files are immutable in DICOM archives (a
-- changed image gets new UIDs), so a path that is already catalogued is not read again.
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
  ingested_at TIMESTAMP
);

-- Thumbnails are rendered by the optional step 40_thumbnails.sql, one row per image.
CREATE TABLE IF NOT EXISTS object_thumbnails (
  path STRING,
  thumbnail BINARY,
  thumbnail_size INT,
  thumbnail_error_reason STRING,
  thumbnail_error_message STRING,
  created_at TIMESTAMP
);

-- The files this run reads, listed once into a working table that 20_meta.sql drops when done:
-- a view over read_files would list the folder again for every statement naming it (the count
-- below, then the insert), and a file arriving in between would be counted but not read.
DROP TABLE IF EXISTS pixels_new_files;
CREATE TABLE pixels_new_files AS
SELECT l.*
FROM pixels_listing AS l
LEFT ANTI JOIN object_catalog AS c
  ON c.path = l.path;

SELECT count(*) AS files_to_read FROM pixels_new_files;
