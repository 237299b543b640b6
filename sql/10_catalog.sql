-- Step 1: list every file under ${path} with list_files: each file gets a row, zero-byte and
-- _-named files included; an unreadable folder, a dangling link or a pipe gets a row with its
-- reason. A zip archive (*.zip) is listed member by member from its directory, without
-- extracting it (zip_members: zip://<member>::<archive> paths; hostile members get a reason).
-- The path is taken literally (never a glob). Only names, sizes and times are read.
-- Parameters: path (required), glob (default: * — DICOM files often have no extension),
-- extract_zip (default: empty — members are read in place; else a folder to extract them to).

-- The version of dicom_meta's JSON that the rows of this run are written with: a row written
-- by an older version (or before versions were recorded: NULL) is read again by the next run
-- ('reread'), so that every row gets the current JSON. 2: PS3.18 F.2.5 — an empty value among
-- several is null, an empty sequence has no Value (docs/tables.md).
DECLARE OR REPLACE VARIABLE pixels_meta_json_version INT DEFAULT 2;

-- The catalog table: one row per file, good or bad; a file deleted since gets deleted_at (NULL:
-- present at the last run). Each run appends its rows as one new
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
  deleted_at TIMESTAMP,
  meta_json_version INT,
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
  deleted_at TIMESTAMP,
  ingest_run STRING
)
PARTITIONED BY (ingest_run);

-- What is listed: every file under ${path}. (A stream, ingest/stream.py, puts its micro-batch's
-- files in this view instead: this statement is the one it leaves out.)
CREATE OR REPLACE TEMPORARY VIEW pixels_listed AS
SELECT path, modificationTime, length, reason, message
FROM list_files('${path}', glob => '${glob:-*}');

-- The listing, compared with the catalog, into a working table that 30_deleted.sql drops when
-- done (a view would list the folder again for every statement naming it). The table is this
-- run's own: its name, pixels_listing_<random>, is a session variable (a session's variables
-- are its own), so a run never reads or drops another's listing; pixels-sql drops the tables of
-- killed runs before the next one. change says what this run does with each file:
--   new      never catalogued, or deleted before and back now: read it;
--   changed  its length or modificationTime differs from its catalogued row: read it again,
--            the new row replaces the old one;
--   retried  it failed for a reason that may pass (not_found, unreadable): read it again;
--   reread   its row was written by an older dicom_meta JSON version: read it again;
--   NULL     unchanged: nothing to do.
-- archive and member name a member read in place; source_archive, the archive a row comes from
-- (also for a member extracted with extract_zip, catalogued as the written file).
-- A member's modificationTime is its archive's: a rewritten archive's members are re-read.
DECLARE OR REPLACE VARIABLE pixels_listing_table STRING
  DEFAULT concat('pixels_listing_', replace(uuid(), '-', ''));

CREATE TABLE IDENTIFIER(pixels_listing_table) AS
WITH listed AS (
  SELECT * FROM pixels_listed
),
files AS (
  SELECT
    path, modificationTime, length, reason, message,
    NULL AS archive, NULL AS member, NULL AS source_archive
  FROM listed
  WHERE reason IS NOT NULL OR NOT endswith(lower(path), '.zip')
  UNION ALL
  -- With extract_zip set, each good member is written to that folder (zip_extract, in
  -- parallel) and the written file is catalogued instead; a member that cannot be written is
  -- read in place.
  SELECT
    coalesce(concat('file:', extracted.path), path) AS path,
    modificationTime,
    length,
    reason,
    message,
    CASE WHEN extracted.path IS NULL THEN archive END AS archive,
    CASE WHEN extracted.path IS NULL THEN member END AS member,
    archive AS source_archive
  FROM (
    SELECT
      m.path,
      m.modificationTime,
      m.length,
      m.reason,
      m.message,
      m.archive,
      m.member,
      -- Spark runs a Python function for every row of its input, whatever CASE branch it
      -- is in: a member with a reason gets a NULL path, so that nothing is written for it.
      CASE WHEN m.reason IS NULL AND '${extract_zip:-}' != '' THEN zip_extract(
        CASE WHEN m.reason IS NULL THEN m.path END,
        '${extract_zip:-}',
        concat(
          CASE
            WHEN startswith(regexp_replace(m.archive, '^file:(//)?', ''), '${path}/')
              THEN substr(regexp_replace(m.archive, '^file:(//)?', ''), length('${path}') + 2)
            ELSE regexp_extract(m.archive, '[^/]+$', 0)
          END,
          '/',
          m.member
        ),
        unix_seconds(m.modificationTime)
      ) END AS extracted
    FROM (
      -- An archive's members all come out of the one task that lists it: spread over the
      -- cores (by a hash of the path, so a task still gets each archive's members one after
      -- the other and its reader parses the archive once), for zip_extract here and the
      -- header reads of 20_meta.sql, which reads this table's files in parallel.
      SELECT /*+ REPARTITION(path) */
        m.*, l.path AS archive, l.modificationTime
      FROM listed AS l, LATERAL inline(zip_members(l.path)) AS m
      WHERE l.reason IS NULL AND endswith(lower(l.path), '.zip')
    ) AS m
  )
),
catalogued AS (
  -- Each path's newest row (a killed run may have left an older one beside it).
  SELECT path, length, modificationTime, meta_error_reason, deleted_at, meta_json_version
  FROM (
    SELECT *, row_number() OVER (PARTITION BY path ORDER BY ingest_run DESC) AS newest
    FROM object_catalog
  )
  WHERE newest = 1
)
SELECT
  f.path,
  f.modificationTime,
  f.length,
  f.reason AS listing_reason,
  f.message AS listing_message,
  f.archive,
  f.member,
  f.source_archive,
  CASE
    WHEN c.path IS NULL OR c.deleted_at IS NOT NULL THEN 'new'
    WHEN NOT (c.length <=> f.length AND c.modificationTime <=> f.modificationTime) THEN 'changed'
    WHEN c.meta_error_reason IN ('not_found', 'unreadable') THEN 'retried'
    WHEN NOT (c.meta_json_version <=> pixels_meta_json_version) THEN 'reread'
  END AS change
FROM files AS f
LEFT JOIN catalogued AS c ON c.path = f.path;

-- The statements after this one name the table pixels_listing: a temporary view (this
-- session's own) over this run's table; a view cannot name a variable, so it is built.
EXECUTE IMMEDIATE concat(
  'CREATE OR REPLACE TEMPORARY VIEW pixels_listing AS SELECT * FROM ', pixels_listing_table
);

SELECT
  count(*) AS files_to_read,
  count_if(change = 'new') AS new_files,
  count_if(change = 'changed') AS changed_files,
  count_if(change = 'retried') AS retried_files,
  count_if(change = 'reread') AS reread_files,
  count_if(source_archive IS NOT NULL) AS zip_members
FROM pixels_listing
WHERE change IS NOT NULL;
