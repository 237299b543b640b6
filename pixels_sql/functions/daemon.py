"""Spark's Python worker daemon, with the pixels-sql functions imported before it forks.

Spark starts one daemon per executor (``python -m <spark.python.daemon.module>``) and forks a
worker from it for each Python task slot. Spark's own daemon imports almost nothing, so each
worker imported pydicom, numpy, Pillow and pandas before its first row. Imported here once,
they reach every worker, and every worker's file-reading helper (io/isolation.py forks it),
through fork. ``pixels_sql.session()`` sets ``spark.python.daemon.module`` to this module.
"""

from __future__ import annotations

import gc

# Imported for their side effect: loaded into the daemon, inherited by every forked worker.
import pyspark.worker  # noqa: F401
from pyspark import daemon

import pixels_sql.functions  # noqa: F401

if __name__ == "__main__":
    # Every object the imports made lives as long as the worker: out of the cyclic garbage
    # collector's reach. Otherwise each of a worker's full collections walks them all (pandas,
    # pyarrow, pydicom, pyspark): a third of a worker's CPU time while dicom_meta ran over
    # 20,000 headers (perf, 2026-11-27). Forked children also keep sharing those pages, since
    # a collection no longer writes to them.
    gc.freeze()
    daemon.manager()
