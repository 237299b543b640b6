"""Spark wrappers: one module per SQL function family, each with a FUNCTIONS registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pixels_sql.dicom.tags import dictionary_entries
from pixels_sql.functions import meta, tags, thumbnails
from pixels_sql.functions.registry import SqlFunction

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

FAMILIES = (meta, tags, thumbnails)

FUNCTIONS: dict[str, SqlFunction] = {
    name: function for family in FAMILIES for name, function in family.FUNCTIONS.items()
}

DICTIONARY_VIEW = "dicom_dictionary"
DICTIONARY_SCHEMA = (
    "tag STRING, json_key STRING, keyword STRING, name STRING, vr STRING, vm STRING,"
    " retired BOOLEAN"
)


def register(spark: SparkSession) -> SparkSession:
    """Install every pixels-sql SQL function and the ``dicom_dictionary`` view in ``spark``.

    Safe to call again: functions and the view are replaced, not duplicated.
    """
    for function in FUNCTIONS.values():
        spark.udf.register(function.name, function.build())
    spark.createDataFrame(dictionary_entries(), DICTIONARY_SCHEMA).createOrReplaceTempView(
        DICTIONARY_VIEW
    )
    return spark
