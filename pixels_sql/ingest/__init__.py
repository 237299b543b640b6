"""Ingest a folder incrementally: the ``sql/`` pipeline as one call (batch.py), or as a stream
over Spark Structured Streaming's file source (stream.py)."""

from __future__ import annotations

from pixels_sql.ingest.batch import IngestReport, ingest

__all__ = ["IngestReport", "ingest"]
