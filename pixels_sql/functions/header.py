"""SQL functions behind the typed header table ``object_header``: dicom_header_result,
dicom_header_plan, dicom_header_typed (the rules: ``pixels_sql/dicom/typed.py``).

A header is read once per file: ``dicom_header_result`` gives its DICOM JSON and, from the same
walk, its typed row (``sql/20_meta.sql`` keeps both for the run). ``dicom_header_typed`` types
the DICOM JSON the catalog holds (``to_json(meta)``) for the rows no read of this run typed and
for headers whose columns differ from the table's. ``sql/50_header.sql`` is the statement
sequence that uses them; dbt's macro runs the same statements.
"""

from __future__ import annotations

from functools import partial

import pandas as pd

from pixels_sql.dicom import typed
from pixels_sql.dicom.meta import TypedMetaRow, read_typed_result
from pixels_sql.functions.registry import SqlFunction, read_rows, sql_function

PLAN_TYPE = "struct<add_columns:string,schema:string,shape:string,misfits:array<bigint>>"
RESULT_FIELDS = {
    "meta": "string",
    "typed": "string",
    "skeleton": "string",
    "skeleton_id": "bigint",
    "reason": "string",
    "message": "string",
}
RESULT_TYPE = f"struct<{','.join(f'{name}:{kind}' for name, kind in RESULT_FIELDS.items())}>"


class TaskSkeletons:
    """The skeletons the rows of the running Spark task have carried. A row carries its
    skeleton's text only the first time its task meets it (the headers of a run share a handful),
    and its ``skeleton_id`` always: the task's partition holds each text once, so
    ``collect_set(skeleton)`` still gathers them all, and a task run again starts afresh."""

    def __init__(self) -> None:
        self._task: int | None = None
        self._seen: set[int] = set()

    def seen(self) -> set[int] | None:
        """The ids the running task's rows have carried so far (the caller adds to it); None
        outside a Spark task, where every row keeps its text."""
        from pyspark import TaskContext

        context = TaskContext.get()
        if context is None:
            return None
        task = context.taskAttemptId()
        if task != self._task:
            self._task, self._seen = task, set()
        return self._seen


_TASK_SKELETONS = TaskSkeletons()


def _result_fields(row: TypedMetaRow | None, seen: set[int] | None) -> dict[str, object]:
    """``row`` as dicom_header_result's fields by name: its skeleton's id, and its text only
    if ``seen`` (the task's ids so far) lacks the id."""
    if row is None:
        return dict.fromkeys(RESULT_FIELDS)
    fields: dict[str, object] = {**row._asdict(), "skeleton_id": None}
    if row.skeleton is not None:
        name = typed.skeleton_id(row.skeleton)
        fields["skeleton_id"] = name
        if seen is not None:
            if name in seen:
                fields["skeleton"] = None
            seen.add(name)
    return fields


@sql_function("dicom_header_result(path STRING)", RESULT_TYPE.upper())
def dicom_header_result():
    """dicom_meta_result with, from the same read, the header's typed row and its skeleton:
    STRUCT<meta, typed, skeleton, skeleton_id, reason, message>. ``typed`` is
    dicom_header_typed's JSON of the header with no table to fit (every standard attribute in
    its column); ``skeleton`` the standard tags the header holds, from which dicom_header_plan
    makes the columns, given on the first row of a Spark task that has it (NULL on the next
    ones: headers mostly share a few); ``skeleton_id`` names it on every row.

    SELECT r.meta, from_json(r.typed, 'Modality STRING, StudyDate DATE').*
    FROM (SELECT dicom_header_result(path) AS r FROM read_files('/data/dicom'))
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(RESULT_TYPE)
    def dicom_header_result(paths: pd.Series) -> pd.DataFrame:
        results = read_rows(
            read_typed_result, [(path,) for path in paths], partial(TypedMetaRow, None, None, None)
        )
        seen = _TASK_SKELETONS.seen()  # once a batch: a batch is one task's
        return pd.DataFrame(
            [_result_fields(row, seen) for row in results], columns=list(RESULT_FIELDS)
        ).astype({"skeleton_id": "Int64"})

    return dicom_header_result


@sql_function(
    "dicom_header_plan(table_type STRING, header_types ARRAY<STRING>, skeletons ARRAY<STRING>)",
    PLAN_TYPE.upper(),
)
def dicom_header_plan():
    """How a typed header table of row type ``table_type`` (``typeof(struct(t.*))``) takes
    headers of the VARIANT types ``header_types`` (``schema_of_variant_agg(meta)``) and of the
    skeletons ``skeletons`` (``dicom_header_result(path).skeleton``): STRUCT<add_columns (the
    ALTER TABLE ... ADD COLUMNS list, NULL when none is new), schema (the from_json schema of the
    typed values), shape (the table's columns as JSON, for dicom_header_typed), misfits (the
    skeletons whose typed rows do not fit the table's columns: type them again with
    dicom_header_typed)>. Existing columns are never dropped or retyped.

    SELECT dicom_header_plan('struct<path:string>', array(schema_of_variant_agg(meta)), array())
    FROM object_catalog WHERE meta IS NOT NULL
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(PLAN_TYPE)
    def dicom_header_plan(
        table_types: pd.Series, header_types: pd.Series, skeletons: pd.Series
    ) -> pd.DataFrame:
        plans = [
            typed.plan(
                table_type,
                list(types) if types is not None else [],
                list(shapes) if shapes is not None else [],
            )
            if table_type is not None
            else (None, None, None, None)
            for table_type, types, shapes in zip(table_types, header_types, skeletons, strict=True)
        ]
        return pd.DataFrame(plans, columns=["add_columns", "schema", "shape", "misfits"])

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
    function.name: function
    for function in (dicom_header_result, dicom_header_plan, dicom_header_typed)
}
