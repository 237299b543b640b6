-- Step 3: files catalogued under ${path} that the listing no longer has get deleted_at: their
-- newest row is written again with deleted_at set, as one new partition (all or nothing), and
-- the upkeep after the run drops the older row. They leave the series and study views; their
-- thumbnails follow in 40_thumbnails.sql. A file that comes back is read again as new.
-- Files under a folder or archive that could not be listed this time (a listing row with a
-- reason) are not taken for deleted: they are unknown, not gone.
-- A stream (ingest/stream.py) sees new files only: it runs this step with deletions=false.
-- Parameters: path (the catalogued folder: files elsewhere in the catalog are left alone),
-- deletions (default true),
-- extract_zip (as 10_catalog.sql: the files extracted there belong to this folder's archives).
-- The paths first, from a few narrow columns; then their rows, whole (the header included),
-- joined on the partition column too so that only partitions holding deleted rows are read.
CREATE OR REPLACE TEMPORARY VIEW pixels_deleted_paths AS
SELECT path, ingest_run
FROM (
  SELECT
    path,
    ingest_run,
    deleted_at,
    -- The file on disk: the file itself or the outermost archive holding it.
    element_at(split(local_path, '::'), -1) AS disk_path,
    row_number() OVER (PARTITION BY path ORDER BY ingest_run DESC) AS newest
  FROM object_catalog
) AS c
WHERE ${deletions:-true}
  AND newest = 1
  AND deleted_at IS NULL
  AND (
    disk_path = regexp_replace('${path}', '^file:(//)?', '')
    OR startswith(disk_path, concat(regexp_replace('${path}', '^file:(//)?', ''), '/'))
    -- Members extracted by an earlier run: gone with their archive.
    OR ('${extract_zip:-}' != '' AND startswith(disk_path, '${extract_zip:-}/'))
  )
  AND NOT EXISTS (SELECT 1 FROM pixels_listing AS l WHERE l.path = c.path)
  AND NOT EXISTS (
    SELECT 1
    FROM pixels_listing AS unlisted
    WHERE unlisted.listing_reason IS NOT NULL
      AND (
        c.disk_path = regexp_replace(unlisted.path, '^file:(//)?', '')
        OR startswith(c.disk_path, concat(regexp_replace(unlisted.path, '^file:(//)?', ''), '/'))
        OR endswith(c.path, concat('::', unlisted.path))
      )
  );

CREATE OR REPLACE TEMPORARY VIEW pixels_deleted_files AS
SELECT
  c.rowId, c.path, c.modificationTime, c.length, c.relative_path, c.local_path, c.extension,
  c.path_tags, c.meta, c.StudyInstanceUID, c.SeriesInstanceUID, c.SOPInstanceUID,
  c.SOPClassUID, c.TransferSyntaxUID, c.PatientID, c.PatientName, c.AccessionNumber, c.Modality,
  c.BodyPartExamined, c.Manufacturer, c.StudyDate, c.StudyDescription, c.SeriesDescription,
  c.SeriesNumber, c.InstanceNumber, c.`Rows`, c.`Columns`, c.NumberOfFrames,
  c.meta_error_reason, c.meta_error_message, c.ingested_at,
  current_timestamp() AS deleted_at,
  c.meta_json_version,
  concat(date_format(current_timestamp(), 'yyyyMMddHHmmssSSS'), '-deleted') AS ingest_run
FROM object_catalog AS c
JOIN pixels_deleted_paths AS d ON d.path = c.path AND d.ingest_run = c.ingest_run;

SELECT count(*) AS deleted_files FROM pixels_deleted_paths;

-- pixels-sql: skip if deleted_files = 0
INSERT INTO object_catalog
SELECT * FROM pixels_deleted_files;

-- This run's listing table (10_catalog.sql), named by a variable (sqlglot's grammar has no
-- DROP TABLE IDENTIFIER(): the statement is built), and its view.
EXECUTE IMMEDIATE concat('DROP TABLE IF EXISTS ', pixels_listing_table);

DROP VIEW IF EXISTS pixels_listing;
