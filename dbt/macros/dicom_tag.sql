{#
  dicom_tag(meta, key, type='string'): the first value of a DICOM attribute of `meta` (the
  DICOM JSON header, as VARIANT or STRING), e.g. {{ dicom_tag('meta', 'PatientName') }} or
  {{ dicom_tag('meta', 'Rows', 'int') }}. `meta` is SQL (a column name); `key` a keyword,
  8 hex digits or '(gggg,eeee)'.

  The attributes the models promote to columns compile to Spark's native variant access, the
  exact expressions of sql/20_meta.sql (try_variant_get of '$.<tag>.Value[0]', the Alphabetic
  group of a person name): no Python call per value, and the same values as the pipeline.
  Any other key compiles to the server's dicom_tag function, which knows the whole PS3.6
  dictionary and every VR (cast to `type` if that is not 'string').
#}
{% macro dicom_tag(meta, key, type='string') -%}
  {%- set attribute = _dicom_known_attribute(key) -%}
  {%- if attribute is not none -%}
    {%- set suffix = '.Alphabetic' if attribute.vr == 'PN' else '' -%}
    try_variant_get({{ meta }}, '$.{{ attribute.tag }}.Value[0]{{ suffix }}', '{{ type }}')
  {%- elif type == 'string' -%}
    dicom_tag({{ meta }}, {{ pixels_string(key) }})
  {%- else -%}
    try_cast(dicom_tag({{ meta }}, {{ pixels_string(key) }}) AS {{ type }})
  {%- endif -%}
{%- endmacro %}


{# A DA attribute as a DATE, as sql/20_meta.sql reads StudyDate (NULL when malformed). #}
{% macro dicom_date(meta, key) -%}
  try_to_date({{ dicom_tag(meta, key) }}, 'yyyyMMdd')
{%- endmacro %}


{#
  Tag and VR of the attributes read natively, found by keyword or by tag. Only these: a VR
  must be known at compile time (a person name is an object, not a string), and the server's
  function covers the rest.
#}
{% macro _dicom_known_attribute(key) -%}
  {%- set known = {
    'TransferSyntaxUID': ('00020010', 'UI'),
    'SOPClassUID': ('00080016', 'UI'),
    'SOPInstanceUID': ('00080018', 'UI'),
    'StudyDate': ('00080020', 'DA'),
    'SeriesDate': ('00080021', 'DA'),
    'StudyTime': ('00080030', 'TM'),
    'AccessionNumber': ('00080050', 'SH'),
    'Modality': ('00080060', 'CS'),
    'Manufacturer': ('00080070', 'LO'),
    'InstitutionName': ('00080080', 'LO'),
    'ReferringPhysicianName': ('00080090', 'PN'),
    'StudyDescription': ('00081030', 'LO'),
    'SeriesDescription': ('0008103E', 'LO'),
    'PatientName': ('00100010', 'PN'),
    'PatientID': ('00100020', 'LO'),
    'PatientBirthDate': ('00100030', 'DA'),
    'PatientSex': ('00100040', 'CS'),
    'BodyPartExamined': ('00180015', 'CS'),
    'StudyInstanceUID': ('0020000D', 'UI'),
    'SeriesInstanceUID': ('0020000E', 'UI'),
    'SeriesNumber': ('00200011', 'IS'),
    'InstanceNumber': ('00200013', 'IS'),
    'SamplesPerPixel': ('00280002', 'US'),
    'PhotometricInterpretation': ('00280004', 'CS'),
    'NumberOfFrames': ('00280008', 'IS'),
    'Rows': ('00280010', 'US'),
    'Columns': ('00280011', 'US'),
    'BitsAllocated': ('00280100', 'US'),
  } -%}
  {%- set hex = key | upper | replace('(', '') | replace(')', '') | replace(',', '') -%}
  {%- set found = none -%}
  {%- if key in known -%}
    {%- set found = {'tag': known[key][0], 'vr': known[key][1]} -%}
  {%- elif modules.re.fullmatch('[0-9A-F]{8}', hex) -%}
    {%- for tag, vr in known.values() if tag == hex -%}
      {{ return({'tag': tag, 'vr': vr}) }}
    {%- endfor -%}
  {%- endif -%}
  {{ return(found) }}
{%- endmacro %}
