-- One row per series, as the pipeline's series_catalog (sql/90_views.sql). A view.
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
  CASE WHEN '{{ var("viewer_url") }}' != '' THEN concat(
    '{{ var("viewer_url") }}', '/viewer?StudyInstanceUIDs=', StudyInstanceUID,
    '&SeriesInstanceUIDs=', SeriesInstanceUID
  ) END AS viewer_url
FROM {{ ref('instances') }}
WHERE SeriesInstanceUID IS NOT NULL
GROUP BY StudyInstanceUID, SeriesInstanceUID
