-- Step 4: a thumbnail per catalogued image, rendered once (incremental like the catalog).
-- Files without pixel data (reports, RT plans, waveforms) get a row with reason no_pixel_data,
-- so they are not tried again. The rows land as one new partition: all or nothing.
-- Parameters: thumbnail_size (default 256: longer side, pixels).
-- (object_thumbnails is created by 10_catalog.sql, so the views work without this step.)
CREATE OR REPLACE TEMPORARY VIEW pixels_new_images AS
SELECT c.path
FROM object_catalog AS c
LEFT ANTI JOIN object_thumbnails AS t
  ON t.path = c.path
WHERE c.meta IS NOT NULL;

SELECT count(*) AS files_to_read FROM pixels_new_images;

INSERT INTO object_thumbnails
SELECT
  path,
  result.thumbnail AS thumbnail,
  ${thumbnail_size:-256} AS thumbnail_size,
  result.reason AS thumbnail_error_reason,
  result.message AS thumbnail_error_message,
  current_timestamp() AS created_at,
  concat(
    date_format(current_timestamp(), 'yyyyMMddHHmmssSSS'),
    CASE WHEN result.reason IS NOT NULL THEN '-failed' ELSE '' END
  ) AS ingest_run
FROM (
  SELECT path, dicom_thumbnail_result(path, ${thumbnail_size:-256}) AS result
  FROM pixels_new_images
);
