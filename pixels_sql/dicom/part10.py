"""PS3.10 file format for data sets stored without it.

Archives hold bare data sets (ACR-NEMA style: no 128-byte preamble, no ``DICM``, no File Meta
Information), which dicom_meta reads. DICOMweb sends instances as PS3.10 files (PS3.18 8.7.3.5:
application/dicom), so such a data set is sent behind a preamble and a File Meta Information
group made from its own SOP Class, SOP Instance and encoding; its bytes follow unchanged.
"""

from __future__ import annotations

import io
import warnings
from typing import BinaryIO

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info

from pixels_sql.dicom.meta import read_pydicom_header, transfer_syntax

PREAMBLE_BYTES = 128
PREFIX = b"DICM"
# pixels-sql's implementation class (PS3.7 D.3.3.2; a UID under pydicom's root is not ours to
# use, so this one is derived from the 2.25 UUID arc).
IMPLEMENTATION_CLASS_UID = "2.25.180336937414591513455364618016318651021"
IMPLEMENTATION_VERSION = "PIXELS_SQL_01"


def is_part10(fp: BinaryIO) -> bool:
    """Whether the file starts with the PS3.10 preamble and prefix."""
    fp.seek(PREAMBLE_BYTES)
    found = fp.read(len(PREFIX)) == PREFIX
    fp.seek(0)
    return found


def file_meta_prefix(name: str, fp: BinaryIO, size: int) -> tuple[bytes, str]:
    """The preamble and File Meta Information to put before a bare data set, and its transfer
    syntax UID."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = read_pydicom_header(name, fp, size)
    fp.seek(0)
    syntax = str(transfer_syntax(dataset))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
    meta.MediaStorageSOPInstanceUID = dataset.get("SOPInstanceUID", "")
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    out = io.BytesIO()
    out.write(b"\x00" * PREAMBLE_BYTES + PREFIX)
    write_file_meta_info(out, meta, enforce_standard=True)
    return out.getvalue(), syntax
