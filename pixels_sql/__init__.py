"""pixels-sql: DICOM folders as Spark SQL tables."""

from __future__ import annotations

from pixels_sql.functions import register
from pixels_sql.pipeline import run_pipeline
from pixels_sql.servers.discovery import connect
from pixels_sql.session import session

__version__ = "0.1.0"
__all__ = ["__version__", "connect", "register", "run_pipeline", "session"]
