{#
  A Spark SQL string literal denoting `value` (backslash escapes, as Spark parses literals by
  default): a folder named O'Brien or C:\scans stays that text, and no value adds SQL.
#}
{% macro pixels_string(value) -%}
  '{{ value | string | replace("\\", "\\\\") | replace("'", "\\'") }}'
{%- endmacro %}


{#
  The folder to catalog, from the `path` var, without a trailing slash (as `pixels-sql run`
  normalises it, so relative_path comes out the same). dbt has no current folder to resolve a
  relative path against, and the server may run elsewhere: the path must be absolute or a URI.
#}
{% macro pixels_path() -%}
  {%- set path = var('path', none) -%}
  {%- if path is none or (path | string | trim) == '' -%}
    {%- if execute -%}
      {{ exceptions.raise_compiler_error(
        "set the folder to catalog: --vars '{path: /absolute/folder}'") }}
    {%- endif -%}
    {{ return('/') }}
  {%- endif -%}
  {%- set path = path | string -%}
  {%- if not (path.startswith('/') or modules.re.match('[A-Za-z][A-Za-z0-9+.-]*:', path)) -%}
    {{ exceptions.raise_compiler_error(
      "var path must be an absolute path or a URI, not " ~ path) }}
  {%- endif -%}
  {{ return(path.rstrip('/') or '/') }}
{%- endmacro %}


{#
  The pipeline's parameters as the dbt project sets them (`--vars`), for the generated macros
  of pipeline.sql: path (pixels_path()), glob, thumbnail_size, viewer_url. The others keep the
  default the SQL gives them: extract_zip empty (zip members are read in place, as
  `pixels-sql run` does without --extract-zip) and deletions true.
#}
{% macro pixels_params() -%}
  {{ return({
    'path': pixels_path(),
    'glob': var('glob'),
    'thumbnail_size': var('thumbnail_size') | int,
    'viewer_url': var('viewer_url'),
  }) }}
{%- endmacro %}


{#
  The text standing for the pipeline's ${name} / ${name:-default} in a generated macro, as
  pixels_sql.scripts.substitute() writes it: inside a string literal, the value escaped (so no
  value adds SQL); as code (`code=true`), only a number or true/false. A parameter neither set
  nor defaulted is an error, never an empty value.
#}
{% macro pixels_param(params, name, default=none, code=false) -%}
  {%- set value = params.get(name, default) -%}
  {%- if value is none -%}
    {{ exceptions.raise_compiler_error("the pipeline's SQL takes ${" ~ name ~ "}: not set") }}
  {%- endif -%}
  {%- set value = value | string -%}
  {%- if code -%}
    {%- if not modules.re.fullmatch('[+-]?[0-9]+(\\.[0-9]*)?|true|false', value | lower) -%}
      {{ exceptions.raise_compiler_error(
        "${" ~ name ~ "} stands for a number or true/false, not " ~ value) }}
    {%- endif -%}
    {{ value }}
  {%- else -%}
    {{ value | replace("\\", "\\\\") | replace("'", "\\'") | replace('"', '\\"') }}
  {%- endif -%}
{%- endmacro %}


{#
  After a run of an incremental model that appends whole partitions (ingest_run), as the
  pipeline's tables are kept: drop every row of a path that has a newer row (a re-read file's
  old row, a deleted file's live row). The rule and its steps are pixels_sql.tables.supersede's:
  a partition holding only such rows is dropped, one holding some is rewritten without them
  (dynamic partition overwrite: only the partitions written are replaced). Run as a post-hook,
  so a table that a failed hook left with older rows is cleaned by the next run's.
#}
{% macro pixels_supersede(relation) -%}
  {%- if execute -%}
    {%- set stale = run_query(
      "SELECT ingest_run AS run, count_if(ingest_run < newest) AS stale, count(*) AS total"
      ~ " FROM (SELECT path, ingest_run, max(ingest_run) OVER (PARTITION BY path) AS newest"
      ~ " FROM " ~ relation ~ ") GROUP BY 1 HAVING stale > 0"
    ) -%}
    {%- set partial = [] -%}
    {%- for row in stale.rows -%}
      {%- if row['stale'] == row['total'] -%}
        {%- do run_query(
          "ALTER TABLE " ~ relation ~ " DROP IF EXISTS PARTITION (ingest_run = "
          ~ pixels_string(row['run']) ~ ")"
        ) -%}
      {%- else -%}
        {%- do partial.append(pixels_string(row['run'])) -%}
      {%- endif -%}
    {%- endfor -%}
    {%- if partial -%}
      {%- set columns = adapter.get_columns_in_relation(relation) | map(attribute='quoted')
        | join(', ') -%}
      {%- do run_query("SET spark.sql.sources.partitionOverwriteMode = DYNAMIC") -%}
      {%- do run_query(
        "INSERT OVERWRITE TABLE " ~ relation ~ " PARTITION (ingest_run)"
        ~ " SELECT " ~ columns ~ " FROM " ~ relation ~ " AS t"
        ~ " WHERE ingest_run IN (" ~ partial | join(', ') ~ ")"
        ~ " AND NOT EXISTS (SELECT 1 FROM " ~ relation ~ " AS n"
        ~ " WHERE n.path = t.path AND n.ingest_run > t.ingest_run)"
      ) -%}
    {%- endif -%}
  {%- endif -%}
{%- endmacro %}


{#
  Between the statements of a pipeline script that a model runs whole (the generated
  pipeline_*_statements macros put it there; materialization pixels_script splits at it).
#}
{% macro pixels_statement_separator() -%}
-- pixels-sql dbt: end of statement
{%- endmacro %}


{#
  A model that runs a pipeline script's statements in order, in one session (its temporary
  views, variables and cached tables are the session's): the script creates the model's table
  if it does not exist, alters it and inserts into it, as it does in `pixels-sql run`. dbt's
  own materialisations run one query; the typed header table gains a column per attribute a run
  finds first (ALTER TABLE ... ADD COLUMNS), which no single query does. --full-refresh drops
  the table first. Post-hooks (pixels_supersede) run after the last statement.
#}
{% materialization pixels_script, adapter='spark' %}
  {%- set target = this.incorporate(type='table') -%}
  {%- set existing = load_relation(this) -%}
  {%- if existing is not none and should_full_refresh() -%}
    {%- do adapter.drop_relation(existing) -%}
  {%- endif -%}
  {{ run_hooks(pre_hooks) }}
  {%- set statements = [] -%}
  {%- for text in sql.split(pixels_statement_separator()) if text | trim -%}
    {%- do statements.append(text) -%}
  {%- endfor -%}
  {%- for text in statements -%}
    {%- call statement('main' if loop.last else 'pixels_script_step') -%}
      {{ text }}
    {%- endcall -%}
  {%- endfor -%}
  {{ run_hooks(post_hooks) }}
  {{ return({'relations': [target]}) }}
{% endmaterialization %}
