-- Step 4: a thumbnail per catalogued image, rendered once (incremental like the catalog), and
-- again when its file changed. Files without pixel data (reports, RT plans, waveforms) get a row
-- with reason no_pixel_data, so they are not tried again. Thumbnails follow their file: a
-- deleted file's thumbnail (or one whose file no longer reads) gets deleted_at. Each statement's
-- rows land as one new partition: all or nothing.
-- Parameters: thumbnail_size (default 256: longer side, pixels).
-- (object_thumbnails is created by 10_catalog.sql, so the views work without this step.)
-- "Has a header" is meta_error_reason IS NULL (meta is NULL exactly when a reason is set): the
-- small column, not the VARIANT, is read for every catalogued file.
CREATE OR REPLACE TEMPORARY VIEW pixels_current_files AS
SELECT *
FROM (
  SELECT *, row_number() OVER (PARTITION BY path ORDER BY ingest_run DESC) AS newest
  FROM object_catalog
)
WHERE newest = 1;

CREATE OR REPLACE TEMPORARY VIEW pixels_current_thumbnails AS
SELECT *
FROM (
  SELECT *, row_number() OVER (PARTITION BY path ORDER BY ingest_run DESC) AS newest
  FROM object_thumbnails
)
WHERE newest = 1 AND deleted_at IS NULL;

CREATE OR REPLACE TEMPORARY VIEW pixels_new_images AS
SELECT c.path
FROM pixels_current_files AS c
LEFT ANTI JOIN pixels_current_thumbnails AS t
  ON t.path = c.path
  AND t.created_at >= c.ingested_at
WHERE c.meta_error_reason IS NULL AND c.deleted_at IS NULL;

-- Live thumbnails whose file is deleted or no longer reads. (Their paths are not among the new
-- images: writing their tombstones first or last changes neither set.)
CREATE OR REPLACE TEMPORARY VIEW pixels_deleted_thumbnails AS
SELECT t.*
FROM pixels_current_thumbnails AS t
LEFT ANTI JOIN pixels_current_files AS c
  ON c.path = t.path
  AND c.meta_error_reason IS NULL
  AND c.deleted_at IS NULL;

-- Both counts in one pass (one job: each scalar subquery would be its own, ranking both tables
-- again), by the conditions of the two views above (a path has one current row in each).
SELECT
  count_if(
    c.path IS NOT NULL AND c.meta_error_reason IS NULL AND c.deleted_at IS NULL
    AND NOT coalesce(t.created_at >= c.ingested_at, false)
  ) AS images_to_render,
  count_if(
    t.path IS NOT NULL AND NOT coalesce(
      c.path IS NOT NULL AND c.meta_error_reason IS NULL AND c.deleted_at IS NULL, false
    )
  ) AS deleted_thumbnails
FROM pixels_current_files AS c
FULL OUTER JOIN pixels_current_thumbnails AS t ON t.path = c.path;

-- pixels-sql: skip if deleted_thumbnails = 0
INSERT INTO object_thumbnails
SELECT
  path,
  thumbnail,
  thumbnail_size,
  thumbnail_error_reason,
  thumbnail_error_message,
  created_at,
  current_timestamp() AS deleted_at,
  concat(date_format(current_timestamp(), 'yyyyMMddHHmmssSSS'), '-deleted') AS ingest_run
FROM pixels_deleted_thumbnails;

-- pixels-sql: skip if images_to_render = 0
INSERT INTO object_thumbnails
SELECT
  path,
  result.thumbnail AS thumbnail,
  ${thumbnail_size:-256} AS thumbnail_size,
  result.reason AS thumbnail_error_reason,
  result.message AS thumbnail_error_message,
  current_timestamp() AS created_at,
  CAST(NULL AS TIMESTAMP) AS deleted_at,
  concat(
    date_format(current_timestamp(), 'yyyyMMddHHmmssSSS'),
    CASE WHEN result.reason IS NOT NULL THEN '-failed' ELSE '' END
  ) AS ingest_run
FROM (
  SELECT path, dicom_thumbnail_result(path, ${thumbnail_size:-256}) AS result
  FROM pixels_new_images
);
