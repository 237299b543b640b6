"""SQL functions behind the typed header table ``object_header``: dicom_header_plan,
dicom_header_typed (the rules: ``pixels_sql/dicom/typed.py``).

They read the DICOM JSON the catalog holds (``to_json(meta)``), never a file: a header is read
once per file, by ``dicom_meta_result``. ``sql/50_header.sql`` is the statement sequence that
uses them; dbt's macro runs the same statements.
"""

from __future__ import annotations

import pandas as pd

from pixels_sql.dicom import typed
from pixels_sql.functions.registry import SqlFunction, sql_function

PLAN_TYPE = "struct<add_columns:string,schema:string,shape:string>"


@sql_function("dicom_header_plan(table_type STRING, header_types ARRAY<STRING>)", PLAN_TYPE.upper())
def dicom_header_plan():
    """How a typed header table of row type ``table_type`` (``typeof(struct(t.*))``) takes
    headers of the VARIANT types ``header_types`` (``schema_of_variant_agg(meta)``):
    STRUCT<add_columns (the ALTER TABLE ... ADD COLUMNS list, NULL when none is new), schema
    (the from_json schema of the typed values), shape (the table's columns as JSON, for
    dicom_header_typed)>. Existing columns are never dropped or retyped.

    SELECT dicom_header_plan('struct<path:string>', array(schema_of_variant_agg(meta)))
    FROM object_catalog WHERE meta IS NOT NULL
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(PLAN_TYPE)
    def dicom_header_plan(table_types: pd.Series, header_types: pd.Series) -> pd.DataFrame:
        plans = [
            typed.plan(table_type, list(row) if row is not None else [])
            if table_type is not None
            else (None, None, None)
            for table_type, row in zip(table_types, header_types, strict=True)
        ]
        return pd.DataFrame(plans, columns=["add_columns", "schema", "shape"])

    return dicom_header_plan


@sql_function("dicom_header_typed(meta STRING, shape STRING)", "STRING")
def dicom_header_typed():
    """A header (DICOM JSON text) as typed values by keyword, JSON for
    ``from_json(..., dicom_header_plan(...).schema)``: dates as DATE, numbers as numbers, person
    names as STRUCT<Alphabetic, Ideographic, Phonetic>, sequences as arrays of items; private
    and unknown elements, and values that do not fit their column, in OtherElements (with an
    issue for the latter). ``shape``: the plan's shape (the table's columns).

    SELECT from_json(dicom_header_typed(to_json(meta), NULL), 'Modality STRING, StudyDate DATE')
    FROM object_catalog
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("string")
    def dicom_header_typed(metas: pd.Series, shapes: pd.Series) -> pd.Series:
        return pd.Series(
            [typed.typed_json(meta, shape) for meta, shape in zip(metas, shapes, strict=True)],
            dtype=object,
        )

    return dicom_header_typed


FUNCTIONS: dict[str, SqlFunction] = {
    function.name: function for function in (dicom_header_plan, dicom_header_typed)
}
