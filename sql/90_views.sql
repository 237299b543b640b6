-- Step 9: views over the catalog — failed files, series and studies, and the copies of each
-- instance. Views read the tables at query time, so they stay current as new files are
-- ingested; deleted files (deleted_at set) are left out of all of them.
-- Parameters: viewer_url (default empty: the viewer_url columns are NULL; else the address of a
-- pixels-sql serve, e.g. http://127.0.0.1:8080, which pixels-sql fills in when one runs).
CREATE OR REPLACE VIEW object_errors AS
SELECT
  path,
  -- The listing's own reasons (unreadable folder, dangling link, pipe) have no size or time.
  CASE WHEN length IS NULL THEN 'catalog' ELSE 'meta' END AS stage,
  meta_error_reason AS reason,
  meta_error_message AS message,
  ingested_at AS seen_at
FROM object_catalog
WHERE meta_error_reason IS NOT NULL AND deleted_at IS NULL
UNION ALL
SELECT
  path,
  'thumbnail' AS stage,
  thumbnail_error_reason AS reason,
  thumbnail_error_message AS message,
  created_at AS seen_at
FROM object_thumbnails
WHERE thumbnail_error_reason IS NOT NULL
  AND thumbnail_error_reason != 'no_pixel_data'
  AND deleted_at IS NULL;

CREATE OR REPLACE VIEW series_catalog AS
SELECT
  StudyInstanceUID,
  SeriesInstanceUID,
  first(PatientID, true) AS PatientID,
  first(Modality, true) AS Modality,
  first(SeriesNumber, true) AS SeriesNumber,
  first(SeriesDescription, true) AS SeriesDescription,
  first(BodyPartExamined, true) AS BodyPartExamined,
  count(*) AS instances,
  sum(coalesce(NumberOfFrames, 1)) AS frames,
  sum(length) AS bytes,
  min(InstanceNumber) AS first_instance_number,
  max(InstanceNumber) AS last_instance_number,
  min(path) AS first_path,
  CASE WHEN '${viewer_url:-}' != '' THEN concat(
    '${viewer_url:-}', '/viewer?StudyInstanceUIDs=', StudyInstanceUID,
    '&SeriesInstanceUIDs=', SeriesInstanceUID
  ) END AS viewer_url
FROM object_catalog
WHERE SeriesInstanceUID IS NOT NULL AND deleted_at IS NULL
GROUP BY StudyInstanceUID, SeriesInstanceUID;

CREATE OR REPLACE VIEW study_catalog AS
SELECT
  StudyInstanceUID,
  first(PatientID, true) AS PatientID,
  first(PatientName, true) AS PatientName,
  first(AccessionNumber, true) AS AccessionNumber,
  min(StudyDate) AS StudyDate,
  first(StudyDescription, true) AS StudyDescription,
  array_sort(collect_set(Modality)) AS modalities,
  count(DISTINCT SeriesInstanceUID) AS series,
  count(*) AS instances,
  sum(length) AS bytes,
  CASE WHEN '${viewer_url:-}' != '' THEN concat(
    '${viewer_url:-}', '/viewer?StudyInstanceUIDs=', StudyInstanceUID
  ) END AS viewer_url
FROM object_catalog
WHERE StudyInstanceUID IS NOT NULL AND deleted_at IS NULL
GROUP BY StudyInstanceUID;

-- Every live instance (each path's newest row, with a header and a SOPInstanceUID), with the
-- rule that picks, among files holding the same SOPInstanceUID, the one served: the copy
-- catalogued first (its row's ingested_at), then the first path. DICOMweb addresses instances
-- by UID and its index reads this view, so both follow this one rule; a file arriving later
-- with a catalogued instance's UID never replaces what is served (docs/tables.md).
CREATE OR REPLACE VIEW instance_copies AS
SELECT
  *,
  count(*) OVER (PARTITION BY SOPInstanceUID) AS copies,
  row_number() OVER (PARTITION BY SOPInstanceUID ORDER BY ingested_at, path) = 1 AS served
FROM (
  SELECT * EXCEPT (newest)
  FROM (
    SELECT *, row_number() OVER (PARTITION BY path ORDER BY ingest_run DESC) AS newest
    FROM object_catalog
  )
  WHERE newest = 1
)
WHERE deleted_at IS NULL AND meta_error_reason IS NULL AND SOPInstanceUID IS NOT NULL;

-- Instances held by several files with different content: each copy not served beside the
-- one served. Content is compared by length and header (its DICOM JSON without the file
-- locations of its BulkDataURIs); pixel data is not read, so copies that differ only there
-- are not listed. Identical copies (a folder copied twice) are not conflicts.
CREATE OR REPLACE VIEW instance_conflicts AS
WITH compared AS (
  SELECT
    SOPInstanceUID,
    path,
    length,
    ingested_at,
    served,
    sha2(regexp_replace(to_json(meta), '"BulkDataURI":"([^"\\\\]|\\\\.)*"', ''), 256)
      AS header
  FROM instance_copies
  WHERE copies > 1
)
SELECT
  c.SOPInstanceUID,
  s.path AS served_path,
  c.path AS conflicting_path,
  s.ingested_at AS served_ingested_at,
  c.ingested_at AS conflicting_ingested_at,
  s.length AS served_length,
  c.length AS conflicting_length
FROM compared AS c
JOIN compared AS s ON s.SOPInstanceUID = c.SOPInstanceUID AND s.served
WHERE NOT c.served AND NOT (c.length <=> s.length AND c.header = s.header);
