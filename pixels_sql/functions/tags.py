"""SQL functions reading attributes out of DICOM JSON: dicom_tag, dicom_tags."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pandas as pd

from pixels_sql.dicom.tags import tag_value, tag_values
from pixels_sql.functions.registry import SqlFunction, sql_function


def as_meta_dict(meta: Any) -> dict[str, Any] | None:
    """DICOM JSON from a STRING cell or a VARIANT cell (pyspark's VariantVal)."""
    if meta is None:
        return None
    if isinstance(meta, str):
        return json.loads(meta)
    if hasattr(meta, "toJson"):  # pyspark.sql.types.VariantVal
        return json.loads(meta.toJson())
    if isinstance(meta, dict):
        return meta
    raise TypeError(f"dicom_tag expects DICOM JSON as STRING or VARIANT, got {type(meta).__name__}")


def lookup(
    find: Callable[[dict[str, Any] | None, str], Any], metas: pd.Series, keys: pd.Series
) -> pd.Series:
    """``find(meta, key)`` per row; a NULL key gives NULL."""
    return pd.Series(
        [
            None if key is None else find(as_meta_dict(meta), key)
            for meta, key in zip(metas, keys, strict=True)
        ],
        dtype=object,
    )


@sql_function("dicom_tag(meta STRING|VARIANT, key STRING)", "STRING")
def dicom_tag():
    """First value of an attribute as STRING (PN gives its Alphabetic name); NULL when absent.

    key is a keyword ('PatientName'), '00100010' or '(0010,0010)'.

    SELECT dicom_tag(meta, 'PatientName'), dicom_tag(meta, '(0008,0060)') FROM object_catalog
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("string")
    def dicom_tag(metas: pd.Series, keys: pd.Series) -> pd.Series:
        return lookup(tag_value, metas, keys)

    return dicom_tag


@sql_function("dicom_tags(meta STRING|VARIANT, key STRING)", "ARRAY<STRING>")
def dicom_tags():
    """Every value of a multi-valued attribute as ARRAY<STRING>; NULL when absent.

    SELECT dicom_tags(meta, 'ImageType')[2] AS image_kind FROM object_catalog
    """
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<string>")
    def dicom_tags(metas: pd.Series, keys: pd.Series) -> pd.Series:
        return lookup(tag_values, metas, keys)

    return dicom_tags


FUNCTIONS: dict[str, SqlFunction] = {
    function.name: function for function in (dicom_tag, dicom_tags)
}
