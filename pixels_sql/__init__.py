"""pixels-sql: DICOM folders as Spark SQL tables."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Light (no pyspark until a session starts), and named like its module: imported now, so the
# name is the function whatever submodule import comes first.
from pixels_sql.session import session

if TYPE_CHECKING:
    from pixels_sql.functions import register
    from pixels_sql.pipeline import run_pipeline
    from pixels_sql.servers.discovery import connect

__version__ = "0.1.0"
__all__ = ["__version__", "connect", "register", "run_pipeline", "session"]

# The public names and the modules that define them, imported on first use: the `pixels-sql`
# command's client side (a query sent to the home's warm engine) must start in a fraction of a
# second, without pydicom, sqlglot or pyspark.
_PUBLIC = {
    "connect": "pixels_sql.servers.discovery",
    "register": "pixels_sql.functions",
    "run_pipeline": "pixels_sql.pipeline",
}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pixels_sql' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
