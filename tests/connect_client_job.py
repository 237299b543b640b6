"""Run by test_connect.py in its own process (a Connect client changes process-wide state).

Usage: connect_client_job.py URL FOLDER. Prints `listed N`, then `modality M error E`.
"""

from __future__ import annotations

import sys
import uuid

from pyspark.sql import SparkSession

import pixels_sql


def main(url: str, folder: str) -> None:
    client = SparkSession.Builder().remote(f"{url}/;session_id={uuid.uuid4()}").create()
    try:
        listed = client.sql(f"SELECT count(*) FROM read_files('{folder}')").first()[0]
        print(f"listed {listed}")
        pixels_sql.register(client)
        row = client.sql(
            f"""SELECT dicom_tag(dicom_meta(path), 'Modality') AS modality,
                       dicom_meta_error(path) AS error
                FROM read_files('{folder}', pathGlobFilter => 'CT_small.dcm')"""
        ).first()
        print(f"modality {row.modality} error {row.error}")
    finally:
        client.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
