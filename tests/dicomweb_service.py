"""The DICOMweb service the tests drive (test_dicomweb.py, test_viewer.py): a folder of corpus
files and of studies made from corpus templates, catalogued and served over real HTTP by the
service of ``pixels-sql serve`` (started on the session's Spark, not in a second JVM)."""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from pixels_sql.ingest import ingest
from pixels_sql.servers.dicomweb.server import start_dicomweb
from pixels_sql.servers.dicomweb.service import ServiceOptions
from pixels_sql.servers.viewer import viewer_dir
from tests.conftest import SAMPLE_FILES, copy_samples
from tests.corpus import PYDICOM_TEST_FILES, pydicom_data_dir
from tests.serving import free_port

EXTRA_FILES = {
    "mf/SC_rgb_rle_2frame.dcm": PYDICOM_TEST_FILES / "SC_rgb_rle_2frame.dcm",
    "mf/emri_small_jpeg_2k_lossless.dcm": pydicom_data_dir() / "emri_small_jpeg_2k_lossless.dcm",
    "jpeg/SC_rgb_jpeg_gdcm.dcm": PYDICOM_TEST_FILES / "SC_rgb_jpeg_gdcm.dcm",
}
ZIPPED = pydicom_data_dir() / "OBXXXX1A.dcm"


def read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


# Studies made from corpus templates, for the matching keys the corpus leaves empty:
# (template, PatientName, AccessionNumber, StudyDescription, StudyDate).
SYNTHETIC = [
    ("CT_small.dcm", "Doe^John", "ACC001", "CHEST CT", "20190305"),
    ("MR_small.dcm", "DOE^JANE", "ACC002", "Brain MRI", "20200615"),
    ("CT_small.dcm", "Smith^Anna", "XYZ-9", "Chest X", "20211201"),
]


def build_folder(root: Path) -> Path:
    copy_samples(root, {**SAMPLE_FILES, **EXTRA_FILES})
    with zipfile.ZipFile(root / "zipped.zip", "w") as archive:
        archive.write(ZIPPED, "inside/OBXXXX1A.dcm")
    (root / "synthetic").mkdir()
    for number, (template, name, accession, description, date) in enumerate(SYNTHETIC):
        dataset = read(PYDICOM_TEST_FILES / template)
        dataset.PatientName, dataset.AccessionNumber = name, accession
        dataset.StudyDescription, dataset.StudyDate = description, date
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.save_as(root / "synthetic" / f"{number}.dcm")
    return root


@contextmanager
def running_service(spark, folder: Path, landing: Path, database: str) -> Iterator[str]:
    """The folder catalogued into ``database`` and served; yields the DICOMweb base URL. Each
    test module names its own database: a module's stores may still be catalogued in the
    background while the next module on the same worker starts."""
    spark.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")
    ingest(spark, str(folder), database, thumbnails=False)
    port = free_port()
    options = ServiceOptions(viewer=viewer_dir())
    server = start_dicomweb(spark, database, "127.0.0.1", port, options, landing=landing)
    try:
        yield f"http://127.0.0.1:{port}/dicomweb"
    finally:
        server.stop()
