"""A de-identified copy of a catalogued database (``pixels-sql deidentify``): the scripts of
``sql/deid/`` (the cohort de-identified into a folder, the mapping recorded in its own
database), then the pipeline over that folder into a database of its own."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from pixels_sql.deid.files import profile_of
from pixels_sql.deid.keys import load_key
from pixels_sql.ingest.batch import IngestReport, ingest
from pixels_sql.pipeline import PIPELINE_DIR
from pixels_sql.runner import run_statements
from pixels_sql.scripts import load_scripts
from pixels_sql.tables import writing

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from pixels_sql.progress import Progress

DEID_DIR = PIPELINE_DIR / "deid"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class DeidReport:
    """What one run did: instances de-identified, copies removed, and the copy's ingest."""

    database: str
    mapping: str
    counts: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    ingest: IngestReport | None = None

    def line(self) -> str:
        return (
            f"deidentify: {self.counts.get('deid_pending', 0)} de-identified"
            f" ({self.failed} not: see {self.mapping}.deid_mapping's reason),"
            f" {self.counts.get('deid_gone', 0)} removed; mapping in {self.mapping}"
        )


def default_names(source: str) -> tuple[str, str]:
    """The de-identified database and the mapping database of ``source`` by default."""
    return f"{source}_deid", f"{source}_deid_mapping"


def deidentify_database(
    spark: SparkSession,
    source: str,
    destination: str,
    *,
    database: str | None = None,
    mapping: str | None = None,
    options: tuple[str, ...] = (),
    where: str | None = None,
    thumbnails: bool = True,
    progress: Progress | None = None,
    log: TextIO | None = None,
) -> DeidReport:
    """De-identify ``source``'s live instances that ``where`` selects into the folder
    ``destination``, record the mapping in ``mapping``, and ingest the folder into
    ``database`` (docs/deidentification.md). Incremental: only new or changed instances are
    done, removed ones are marked and their copies deleted."""
    default_database, default_mapping = default_names(source)
    database, mapping = database or default_database, mapping or default_mapping
    for name in (source, database, mapping):
        if not _NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a database name (letters, digits and _)")
    if len({source, database, mapping}) < 3:
        raise ValueError("the source, de-identified and mapping databases must differ")
    profile_of(options)  # an unknown option fails before anything runs
    load_key()  # as does a missing key
    params = {
        "source": source,
        "destination": destination,
        "mapping": mapping,
        "options": ",".join(options),
    }
    if where:
        params["where"] = where
    report = DeidReport(database, mapping)
    statements = load_scripts([DEID_DIR], params)
    # The home's writer lock, as every pipeline run holds it: two runs never write one
    # destination or mapping at once. Released before the copy's ingest, which takes it again.
    with writing(spark):
        counts = run_statements(spark, statements, progress=progress, log=log)
    report.counts = {
        key: int(value or 0) for key, value in counts.items() if key.startswith("deid")
    }
    if report.counts.get("deid_pending"):
        report.failed = spark.sql(
            f"SELECT count(*) FROM `{mapping}`.deid_mapping WHERE reason IS NOT NULL"
        ).first()[0]
    report.ingest = ingest(
        spark, destination, database, thumbnails=thumbnails, progress=progress, log=log
    )
    return report
