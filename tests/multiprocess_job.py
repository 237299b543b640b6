"""Run by test_multiprocess.py in its own process: the functions on a multi-process Spark.

Prints one line per executor JVM: pid, files seen, headers read, tags found.
"""

from __future__ import annotations

import os
import sys

import pandas as pd
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import LongType

import pixels_sql


@pandas_udf(LongType())
def executor_pid(paths: pd.Series) -> pd.Series:
    # Python worker -> pyspark daemon -> executor JVM: report the JVM's pid (Linux /proc).
    daemon = os.getppid()
    with open(f"/proc/{daemon}/stat") as handle:
        parent = int(handle.read().rsplit(")", 1)[1].split()[1])
    return pd.Series([parent] * len(paths))


def main(home: str, folder: str) -> None:
    spark = pixels_sql.session(home, master="local-cluster[2,1,1024]")
    try:
        spark.udf.register("executor_pid", executor_pid)
        rows = spark.sql(
            f"""SELECT executor_pid(path) AS pid, count(*) AS files,
                       count(try_dicom_meta(path)) AS headers,
                       count(dicom_tag(try_dicom_meta(path), 'SOPInstanceUID')) AS tags
                FROM read_files('{folder}', recursiveFileLookup => true)
                GROUP BY 1"""
        ).collect()
        print(f"driver {spark.sparkContext._gateway.proc.pid}")
        for row in rows:
            print(f"executor {row.pid} {row.files} {row.headers} {row.tags}")
    finally:
        spark.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
