-- More attributes of each DICOM instance, read at query time from the stored header by the
-- server's dicom_tag / dicom_tags functions: a persistent view calling pixels-sql functions.
-- (They are injected into every session of the server, not temporary functions, so Spark
-- accepts them in a view; temporary ones failed with INVALID_TEMP_OBJ_REFERENCE.)
-- The keywords outside dicom_tag's native list compile to the function: see macros/dicom_tag.sql.
SELECT
  path,
  SOPInstanceUID,
  {{ dicom_tag('meta', 'PatientSex') }} AS PatientSex,
  {{ dicom_tag('meta', 'PatientAge') }} AS PatientAge,
  {{ dicom_tag('meta', 'ManufacturerModelName') }} AS ManufacturerModelName,
  dicom_tags(meta, 'ImageType') AS ImageType,
  {{ dicom_tag('meta', 'PhotometricInterpretation') }} AS PhotometricInterpretation,
  {{ dicom_tag('meta', 'BitsStored', 'int') }} AS BitsStored,
  {{ dicom_tag('meta', 'SliceThickness', 'double') }} AS SliceThickness,
  dicom_tags(meta, 'PixelSpacing') AS PixelSpacing
FROM {{ ref('instances') }}
WHERE meta IS NOT NULL AND deleted_at IS NULL
