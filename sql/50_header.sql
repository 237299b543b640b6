-- Step 5: the typed header table object_header: one row per live instance (a catalogued file
-- with a header), one column per attribute found in any header, named by its keyword and typed
-- by its VR (docs/tables.md); private and unknown elements, and values that do not fit their
-- column, in OtherElements. No file is read here: a header read by this run was typed by the
-- same walk (20_meta.sql's pixels_read: result.typed); any other (the first run after an
-- upgrade, a run stopped before this step, dbt's model, which has no pixels_read of its own) is
-- typed from the DICOM JSON that object_catalog.meta holds.
-- Incremental like the catalog: a header row is written for each catalog row that has none
-- (new, changed, re-read files; every instance on the first run after an upgrade); a file
-- deleted or no longer readable gets its header row again with deleted_at set; the upkeep
-- after the run (tables.py) drops each path's older rows. Each statement's rows land as one
-- new partition: all or nothing. The typed rows' INSERTs name their partition (a value made
-- here, digits only): Spark sorts the rows of an INSERT that computes its partition column,
-- which for these wide rows cost a third of the write.
-- Both spread their rows over the cores by path (REBALANCE) before typing them: a run's reads
-- and a catalog's partition come as few large partitions (the listing is small enough for
-- adaptive execution to merge into one), and typing and writing ~190 leaf columns is the
-- costly part; adaptive execution sizes the spread to the rows.
-- Schema drift: an attribute no header had before adds its column (ALTER TABLE ... ADD
-- COLUMNS; older rows NULL); no column is ever dropped or retyped.
-- The same statements work without pixels-sql's runner (dbt runs them): the skip comments are
-- then comments, and a run with nothing to do adds nothing.
CREATE TABLE IF NOT EXISTS object_header (
  path STRING,
  ingested_at TIMESTAMP,
  deleted_at TIMESTAMP,
  OtherElements ARRAY<STRUCT<
    tag: STRING, keyword: STRING, private_creator: STRING, vr: STRING, values: ARRAY<STRING>,
    bulk_data_uri: STRING, issue: STRING
  >>,
  ingest_run STRING
)
PARTITIONED BY (ingest_run);

-- Each path's newest catalog row, from its narrow columns. live: a header that is there now.
CREATE OR REPLACE TEMPORARY VIEW pixels_header_catalog AS
SELECT path, ingest_run, ingested_at, deleted_at IS NULL AND meta_error_reason IS NULL AS live
FROM (
  SELECT
    path, ingest_run, ingested_at, deleted_at, meta_error_reason,
    row_number() OVER (PARTITION BY path ORDER BY ingest_run DESC) AS newest
  FROM object_catalog
)
WHERE newest = 1;

CREATE OR REPLACE TEMPORARY VIEW pixels_header_current AS
SELECT path, ingest_run, ingested_at, deleted_at
FROM (
  SELECT
    path, ingest_run, ingested_at, deleted_at,
    row_number() OVER (PARTITION BY path ORDER BY ingest_run DESC) AS newest
  FROM object_header
)
WHERE newest = 1;

-- The typed rows this run's reads made (20_meta.sql): a path's newest catalog row is the one
-- written from its read. skeleton: on the first row of a read task that has it, else NULL;
-- skeleton_id names it on every row.
CREATE OR REPLACE TEMPORARY VIEW pixels_header_reads AS
SELECT path, typed, skeleton, skeleton_id
FROM pixels_read
WHERE typed IS NOT NULL;

-- What this run does, in one pass over both tables' newest rows: the live catalog rows whose
-- header has no typed row yet, typed by this run's read ('read') or to be typed from the stored
-- header ('pending'; ingested_at says which catalog row a typed row was made from), and the
-- typed rows whose file is deleted, no longer readable or gone from the catalog ('gone').
-- Written into a working table of this run's own, named by a session variable (as
-- 10_catalog.sql's listing), which the statements after it read and the last one drops: each
-- would otherwise rank every row of both tables again, and a cache of it would not last (Spark
-- drops the caches of what reads a table whose columns ALTER TABLE changes, and computes them
-- again after every write to it).
-- The joins below compare todo with '=': Spark prunes partitions by a join only when the other
-- side has a filter it deems selective, and a bare boolean column is not one.
DECLARE OR REPLACE VARIABLE pixels_header_todo_table STRING
  DEFAULT concat('pixels_header_todo_', replace(uuid(), '-', ''));

CREATE TABLE IDENTIFIER(pixels_header_todo_table) AS
SELECT
  coalesce(c.path, h.path) AS path,
  c.ingest_run AS catalog_run,
  c.ingested_at,
  h.ingest_run AS header_run,
  CASE
    WHEN c.live AND (h.path IS NULL OR h.deleted_at IS NOT NULL OR h.ingested_at != c.ingested_at)
      THEN CASE WHEN r.path IS NULL THEN 'pending' ELSE 'read' END
    ELSE 'gone'
  END AS todo,
  r.skeleton_id
FROM pixels_header_catalog AS c
FULL OUTER JOIN pixels_header_current AS h ON h.path = c.path
LEFT JOIN pixels_header_reads AS r ON r.path = c.path
WHERE
  (c.live AND (h.path IS NULL OR h.deleted_at IS NOT NULL OR h.ingested_at != c.ingested_at))
  OR (h.path IS NOT NULL AND h.deleted_at IS NULL AND (c.path IS NULL OR NOT c.live));

EXECUTE IMMEDIATE concat(
  'CREATE OR REPLACE TEMPORARY VIEW pixels_header_todo AS SELECT * FROM ', pixels_header_todo_table
);

-- The pending rows' headers, joined on the partition column too: only partitions holding
-- them are read.
CREATE OR REPLACE TEMPORARY VIEW pixels_header_pending AS
SELECT c.path, c.ingested_at, c.meta
FROM object_catalog AS c
JOIN pixels_header_todo AS t
  ON t.todo = 'pending' AND t.path = c.path AND t.catalog_run = c.ingest_run;

-- The rows this run's reads typed, with their typed row.
CREATE OR REPLACE TEMPORARY VIEW pixels_header_typed AS
SELECT t.path, t.ingested_at, t.skeleton_id, r.typed
FROM pixels_header_todo AS t
JOIN pixels_header_reads AS r ON t.todo = 'read' AND r.path = t.path;

SELECT
  count_if(todo IN ('read', 'pending')) AS header_rows,
  count_if(todo = 'read') AS header_reads,
  count_if(todo = 'gone') AS header_deletions
FROM pixels_header_todo;

-- pixels-sql: skip if header_deletions = 0
INSERT INTO object_header BY NAME
SELECT
  h.* EXCEPT (deleted_at, ingest_run),
  current_timestamp() AS deleted_at,
  concat(date_format(current_timestamp(), 'yyyyMMddHHmmssSSS'), '-deleted') AS ingest_run
FROM object_header AS h
JOIN pixels_header_todo AS t ON t.todo = 'gone' AND t.path = h.path AND t.header_run = h.ingest_run;

-- The plan: the columns this run's headers add (the table's row type, from a row of NULLs when
-- it is empty; the distinct skeletons of this run's reads, and the merged VARIANT
-- type of the pending ones), the from_json schema and the table's shape after, and the
-- misfits: the skeletons whose typed rows do not fit the table's columns (a nested field an
-- existing sequence column lacks), by their skeleton_id, to be typed again for its shape.
-- Run as a query of its own (EXECUTE IMMEDIATE ... INTO): a Python function inside a scalar
-- subquery, as SET VAR's, fails in Spark 4 (NullPointerException planning it in a task).
DECLARE OR REPLACE VARIABLE pixels_header_plan STRUCT<
  add_columns: STRING, schema: STRING, shape: STRING, misfits: ARRAY<BIGINT>
>;

-- pixels-sql: skip if header_rows = 0
EXECUTE IMMEDIATE
  'SELECT dicom_header_plan(t.table_type, s.header_types, r.skeletons)
   FROM (
     SELECT typeof(struct(h.*)) AS table_type
     FROM (SELECT 1 AS one) AS o
     LEFT JOIN object_header AS h ON false
   ) AS t
   CROSS JOIN (
     SELECT array(schema_of_variant_agg(meta)) AS header_types FROM pixels_header_pending
   ) AS s
   CROSS JOIN (SELECT collect_set(skeleton) AS skeletons FROM pixels_header_reads) AS r'
INTO pixels_header_plan;

-- pixels-sql: skip if header_rows = 0
EXECUTE IMMEDIATE coalesce(
  concat('ALTER TABLE object_header ADD COLUMNS (', pixels_header_plan.add_columns, ')'),
  'SELECT 0 AS header_columns_added'
);

-- The rest, typed from the stored header for the table's shape: the pending rows, and those
-- of a misfit skeleton.
-- pixels-sql: skip if header_rows = 0
SELECT count(*) AS header_retyped
FROM pixels_header_todo
WHERE
  todo = 'pending'
  OR (todo = 'read' AND array_contains(pixels_header_plan.misfits, skeleton_id));

-- pixels-sql: skip if header_rows = 0
-- pixels-sql: skip if header_retyped = 0
EXECUTE IMMEDIATE concat(
  'INSERT INTO object_header PARTITION (ingest_run = ''',
  date_format(current_timestamp(), 'yyyyMMddHHmmssSSS'),
  ''') BY NAME ',
  'SELECT path, ingested_at, CAST(NULL AS TIMESTAMP) AS deleted_at, typed.* ',
  'FROM (SELECT path, ingested_at, ',
  'from_json(dicom_header_typed(to_json(meta), ?), ?) AS typed ',
  'FROM (SELECT /*+ REBALANCE(c.path) */ c.path, c.ingested_at, c.meta ',
  'FROM object_catalog AS c JOIN pixels_header_todo AS t ',
  'ON (t.todo = ''pending'' ',
  'OR (t.todo = ''read'' AND array_contains(pixels_header_plan.misfits, t.skeleton_id))) ',
  'AND t.path = c.path AND t.catalog_run = c.ingest_run))'
) USING pixels_header_plan.shape, pixels_header_plan.schema;

-- The rows typed by their read, whose columns the table has as they were typed for: their
-- typed row as it is.
-- pixels-sql: skip if header_rows = 0
-- pixels-sql: skip if header_reads = 0
EXECUTE IMMEDIATE concat(
  'INSERT INTO object_header PARTITION (ingest_run = ''',
  date_format(current_timestamp(), 'yyyyMMddHHmmssSSS'),
  ''') BY NAME ',
  'SELECT path, ingested_at, CAST(NULL AS TIMESTAMP) AS deleted_at, typed.* ',
  'FROM (SELECT path, ingested_at, from_json(typed, ?) AS typed ',
  'FROM (SELECT /*+ REBALANCE(path) */ * FROM pixels_header_typed ',
  'WHERE NOT array_contains(pixels_header_plan.misfits, skeleton_id)))'
) USING pixels_header_plan.schema;

EXECUTE IMMEDIATE concat('DROP TABLE IF EXISTS ', pixels_header_todo_table);

DROP VIEW IF EXISTS pixels_header_todo;

-- Values that left their column (a malformed date, a DS that is no number, a VR other than the
-- dictionary's, ...): one row each, live files only. Their text is in OtherElements.
CREATE OR REPLACE VIEW header_issues AS
SELECT
  h.path,
  e.tag,
  e.keyword,
  e.vr,
  e.values,
  e.issue,
  h.ingested_at
FROM object_header AS h
LATERAL VIEW explode(h.OtherElements) AS e
WHERE h.deleted_at IS NULL AND e.issue IS NOT NULL;
