"""Spark wrappers: one module per SQL function family, each with a FUNCTIONS registry."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pixels_sql.dicom.tags import dictionary_entries
from pixels_sql.functions import (
    archives,
    deid,
    files,
    header,
    listing,
    meta,
    tags,
    thumbnails,
)
from pixels_sql.functions.registry import READ_PATH, WRITE_PATH, SqlFunction

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

FAMILIES = (meta, tags, thumbnails, archives, files, header, deid)

FUNCTIONS: dict[str, SqlFunction] = {
    name: function for family in FAMILIES for name, function in family.FUNCTIONS.items()
}

DICTIONARY_VIEW = "dicom_dictionary"
DICTIONARY_SCHEMA = (
    "tag STRING, json_key STRING, keyword STRING, name STRING, vr STRING, vm STRING,"
    " retired BOOLEAN"
)


# Settings read by the extension jar (PythonFunctions.java) when a session is built: the names
# it injects as session-independent functions and relations.
NAMES_CONF = "spark.pixels_sql.functions"
RELATIONS_CONF = "spark.pixels_sql.relations"
EXTENSION_CLASS = "pixelssql.PixelsSqlExtensions"


def injection_conf() -> dict[str, str]:
    """The settings that make the extension inject every function of :data:`FUNCTIONS` and the
    ``dicom_dictionary`` relation into every session of an application."""
    return {NAMES_CONF: ",".join(FUNCTIONS), RELATIONS_CONF: DICTIONARY_VIEW}


def is_connect_client(spark: SparkSession) -> bool:
    """Whether ``spark`` is a Spark Connect client session (no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def register(spark: SparkSession) -> SparkSession:
    """Install every pixels-sql SQL function and the ``dicom_dictionary`` view.

    With the extension injecting them (``pixels_sql.session()``, ``pixels-sql serve``, or a
    cluster configured with :func:`injection_conf`), this registers the Python UDFs once for the
    whole application: every session of it — each JDBC connection, each Spark Connect client —
    and every persistent view can call them. Otherwise they are temporary functions and a
    temporary view of ``spark``'s session. On a Spark Connect client whose server already
    provides them, nothing is done. Safe to call again: functions are replaced, not duplicated.
    """
    if is_connect_client(spark):
        if not _provided_by_server(spark):
            _register_temporary(spark)
        return spark
    # list_files delegates object-storage listings to a Python table function (any mode).
    listing.register_lister(spark)
    if not _injected(spark):
        _register_temporary(spark)
        return spark
    jvm = spark._jvm
    registry = jvm.pixelssql.PythonFunctions
    guard = jvm.pixelssql.ClientGuard
    for function in FUNCTIONS.values():
        registry.register(function.name, function.build()._unwrapped._judf)
        guard.pathArguments(
            function.name,
            ",".join(map(str, function.argument_positions(READ_PATH))),
            ",".join(map(str, function.argument_positions(WRITE_PATH))),
        )
    # Handed over as JSON text and built in the JVM: a DataFrame of Python rows would start
    # Python workers to be collected (about 5 s of every session's start).
    rows = json.dumps([list(entry) for entry in dictionary_entries()])
    registry.registerRelationRows(DICTIONARY_VIEW, DICTIONARY_SCHEMA, rows)
    return spark


def _injected(spark: SparkSession) -> bool:
    conf = spark.sparkContext.getConf()
    extensions = {name.strip() for name in (conf.get("spark.sql.extensions") or "").split(",")}
    names = set((conf.get(NAMES_CONF) or "").split(","))
    return EXTENSION_CLASS in extensions and names >= set(FUNCTIONS)


def _provided_by_server(spark: SparkSession) -> bool:
    # Analysis only (no job). A server that injects the names but whose driver registered no
    # UDF cannot be helped from here: injected names take precedence over temporary functions.
    try:
        spark.sql("SELECT dicom_tag(CAST(NULL AS STRING), 'Modality')").schema  # noqa: B018
        spark.table(DICTIONARY_VIEW).schema  # noqa: B018
    except Exception as exc:
        if "is not available in this Spark application" in str(exc):
            raise RuntimeError(
                "the Spark Connect server injects the pixels-sql functions but its driver"
                " registered none: start it with `pixels-sql serve`, or without the"
                f" {NAMES_CONF} setting so that clients can register them"
            ) from None
        return False
    return True


def _register_temporary(spark: SparkSession) -> None:
    for function in FUNCTIONS.values():
        spark.udf.register(function.name, function.build())
    spark.createDataFrame(dictionary_entries(), DICTIONARY_SCHEMA).createOrReplaceTempView(
        DICTIONARY_VIEW
    )
