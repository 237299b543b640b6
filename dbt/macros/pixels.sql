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
