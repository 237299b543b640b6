-- Failed files, every stage: as the pipeline's object_errors (sql/90_views.sql). A view: it
-- reads the tables at query time.
SELECT
  path,
  -- The listing's own reasons (unreadable folder, dangling link, pipe) have no size or time.
  CASE WHEN length IS NULL THEN 'catalog' ELSE 'meta' END AS stage,
  meta_error_reason AS reason,
  meta_error_message AS message,
  ingested_at AS seen_at
FROM {{ ref('instances') }}
WHERE meta_error_reason IS NOT NULL
UNION ALL
SELECT
  path,
  'thumbnail' AS stage,
  thumbnail_error_reason AS reason,
  thumbnail_error_message AS message,
  created_at AS seen_at
FROM {{ ref('thumbnails') }}
WHERE thumbnail_error_reason IS NOT NULL
  AND thumbnail_error_reason != 'no_pixel_data'
