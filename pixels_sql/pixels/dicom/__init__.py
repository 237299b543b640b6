"""dbx.pixels' ``dbx.pixels.dicom``: the DICOM transformers, over pixels-sql's SQL functions.

``from pixels_sql.pixels.dicom import *`` gives what the dbx.pixels Quick Start uses, and
dbx.pixels' de-identification transformer, ``DicomAnonymizerExtractor``.
"""

from __future__ import annotations

from pixels_sql.pixels.dicom.dicom_anonymizer_extractor import DicomAnonymizerExtractor
from pixels_sql.pixels.dicom.extractors import (
    DicomMetaExtractor,
    DicomPatcher,
    DicomPillowThumbnailExtractor,
    DicomThumbnailExtractor,
)

__all__ = [
    "DicomAnonymizerExtractor",
    "DicomMetaExtractor",
    "DicomPatcher",
    "DicomPillowThumbnailExtractor",
    "DicomThumbnailExtractor",
]
