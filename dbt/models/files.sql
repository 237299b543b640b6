-- Every file under the `path` var, one row each (zero-byte and _-named files included; an
-- unreadable folder, a dangling link or a pipe gets a row with its reason): the pipeline's
-- listing, sql/10_catalog.sql's pixels_listed (macros/pipeline.sql). The path is taken
-- literally, never as a glob. A zip archive is one row here; instances lists its members.
--
-- dbt sources name tables, and list_files is a table-valued function: so the listing is a model
-- selecting from the function instead of a source. Ephemeral: dbt inlines it as a CTE into the
-- models that ref() it, so each run lists the folder afresh and nothing is created in the
-- metastore. (read_files(path, format => 'binaryFile', recursiveFileLookup => true) would do
-- too, but skips zero-byte and _-named files: they would never get a row, nor an error.)
{{ config(materialized='ephemeral') }}

{{ pipeline_listed(pixels_params()) }}
