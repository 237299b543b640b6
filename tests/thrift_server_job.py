"""Run by test_jdbc.py in its own process: a Thrift/JDBC server over the embedded session.

Usage: thrift_server_job.py HOME PORT. Prints "ready" once listening; runs until killed.
Each JDBC connection gets its own Spark session (singleSession off), so what the test sees
there comes from the extension, not from this process's session.
"""

from __future__ import annotations

import sys
import time

import pixels_sql


def main(home: str, port: str) -> None:
    spark = pixels_sql.session(
        home,
        master="local[2]",
        conf={
            "spark.hadoop.hive.server2.thrift.port": port,
            "spark.hadoop.hive.server2.thrift.bind.host": "127.0.0.1",
            "spark.sql.hive.thriftServer.singleSession": "false",
        },
    )
    server = spark._jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2
    server.startWithContext(spark._jsparkSession.sqlContext())
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
