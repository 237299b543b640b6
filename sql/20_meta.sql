-- Step 2: read the header of each new or changed file once (dicom_meta_result never fails: a
-- bad file gives a reason instead), store it as VARIANT and promote the attributes people filter
-- on to typed columns. Files the listing already gave a reason (an unreadable folder, a dangling
-- link, a pipe, a hostile zip member) are not opened. The rows land as one new partition of
-- object_catalog: all or nothing; a changed file's new row replaces its old one.
-- A zip member's local_path is its member path with the archive's local path; its
-- relative_path is the archive's followed by the member's names (where --extract-zip writes it).
-- Parameters: path (the catalogued folder, for relative_path), extract_zip (as 10_catalog.sql).
-- The rows are those 10_catalog.sql counted as files_to_read: with none, `pixels-sql` skips
-- the statement (it would write nothing).
-- pixels-sql: skip if files_to_read = 0
INSERT INTO object_catalog
SELECT
  xxhash64(path) AS rowId,
  path,
  modificationTime,
  length,
  concat(
    CASE
      WHEN startswith(disk_path, '${path}/') THEN substr(disk_path, length('${path}') + 2)
      -- A member extracted with extract_zip: where it sits below that folder.
      WHEN '${extract_zip:-}' != '' AND startswith(disk_path, '${extract_zip:-}/')
        THEN substr(disk_path, length('${extract_zip:-}') + 2)
      WHEN startswith(coalesce(archive, path), '${path}/')
        THEN substr(coalesce(archive, path), length('${path}') + 2)
      ELSE disk_path
    END,
    coalesce(concat('/', member), '')
  ) AS relative_path,
  local_path,
  lower(regexp_extract(coalesce(member, local_path), '\\.([^./]+)$', 1)) AS extension,
  filter(
    split(concat(disk_path, coalesce(concat('/', member), '')), '[/\\\\._\\s-]+'),
    part -> part != ''
  ) AS path_tags,
  meta,
  try_variant_get(meta, '$.0020000D.Value[0]', 'string') AS StudyInstanceUID,
  try_variant_get(meta, '$.0020000E.Value[0]', 'string') AS SeriesInstanceUID,
  try_variant_get(meta, '$.00080018.Value[0]', 'string') AS SOPInstanceUID,
  try_variant_get(meta, '$.00080016.Value[0]', 'string') AS SOPClassUID,
  try_variant_get(meta, '$.00020010.Value[0]', 'string') AS TransferSyntaxUID,
  try_variant_get(meta, '$.00100020.Value[0]', 'string') AS PatientID,
  try_variant_get(meta, '$.00100010.Value[0].Alphabetic', 'string') AS PatientName,
  try_variant_get(meta, '$.00080050.Value[0]', 'string') AS AccessionNumber,
  try_variant_get(meta, '$.00080060.Value[0]', 'string') AS Modality,
  try_variant_get(meta, '$.00180015.Value[0]', 'string') AS BodyPartExamined,
  try_variant_get(meta, '$.00080070.Value[0]', 'string') AS Manufacturer,
  try_to_date(try_variant_get(meta, '$.00080020.Value[0]', 'string'), 'yyyyMMdd') AS StudyDate,
  try_variant_get(meta, '$.00081030.Value[0]', 'string') AS StudyDescription,
  try_variant_get(meta, '$.0008103E.Value[0]', 'string') AS SeriesDescription,
  try_variant_get(meta, '$.00200011.Value[0]', 'int') AS SeriesNumber,
  try_variant_get(meta, '$.00200013.Value[0]', 'int') AS InstanceNumber,
  try_variant_get(meta, '$.00280010.Value[0]', 'int') AS `Rows`,
  try_variant_get(meta, '$.00280011.Value[0]', 'int') AS `Columns`,
  try_variant_get(meta, '$.00280008.Value[0]', 'int') AS NumberOfFrames,
  meta_error_reason,
  meta_error_message,
  current_timestamp() AS ingested_at,
  CAST(NULL AS TIMESTAMP) AS deleted_at,
  pixels_meta_json_version AS meta_json_version,
  -- Failed files go to a partition of their own: replacing their rows when they are read
  -- again rewrites only that small partition.
  concat(
    date_format(current_timestamp(), 'yyyyMMddHHmmssSSS'),
    CASE WHEN meta_error_reason IS NOT NULL THEN '-failed' ELSE '' END
  ) AS ingest_run
FROM (
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
  FROM (
    SELECT *, try_parse_json(result.meta) AS meta
    FROM (
      SELECT
        *,
        -- The file on disk: the file itself, or the (outermost) archive holding the member.
        regexp_replace(coalesce(archive, path), '^file:(//)?', '') AS disk_path,
        regexp_replace(path, '(^|::)file:(//)?', '$1') AS local_path,
        -- A NULL path is not opened (a pipe would block the reader).
        dicom_meta_result(CASE WHEN listing_reason IS NULL THEN path END) AS result
      FROM pixels_listing
      WHERE change IS NOT NULL
    )
  )
);
