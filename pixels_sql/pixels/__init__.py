"""dbx.pixels' Python API on pixels-sql: ``Catalog`` and the transformers.

Notebooks written against Databricks' ``dbx.pixels`` run with the import prefix changed::

    from pixels_sql.pixels import Catalog
    from pixels_sql.pixels.dicom import *

The transformers are column expressions over pixels-sql's SQL functions and ``Catalog.save``
runs the pipeline's own statements: see docs/migrating-from-dbx-pixels.md for what maps to
what, and what differs.
"""

from __future__ import annotations

from pixels_sql.pixels.catalog import Catalog
from pixels_sql.pixels.transformers import (
    PathExtractor,
    TagExtractor,
    Transformer,
    UnsupportedError,
)

__all__ = ["Catalog", "PathExtractor", "TagExtractor", "Transformer", "UnsupportedError"]
