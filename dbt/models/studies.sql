-- One row per study, as the pipeline's study_catalog (sql/90_views.sql). A view.
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
  CASE WHEN '{{ var("viewer_url") }}' != '' THEN concat(
    '{{ var("viewer_url") }}', '/viewer?StudyInstanceUIDs=', StudyInstanceUID
  ) END AS viewer_url
FROM {{ ref('instances') }}
WHERE StudyInstanceUID IS NOT NULL
GROUP BY StudyInstanceUID
