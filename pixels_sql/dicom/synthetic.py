"""Synthetic DICOM files made from real templates: new UIDs, chosen size and encoding.

For benchmarks and tests that need more or larger files than the public corpus holds. Every
file is a valid Part 10 file that pydicom reads back; the pixel content comes from the template,
tiled and cropped to the requested size, so it looks like an image, not noise.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    generate_uid,
)

ENCODINGS = ("explicit", "jpeg2000", "jpeg-baseline")


def _read(template: str | Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(template)


def new_uids(dataset: Dataset, study: str | None = None, series: str | None = None) -> None:
    """Give the data set a new instance (and study/series unless given) identity."""
    dataset.StudyInstanceUID = study or generate_uid()
    dataset.SeriesInstanceUID = series or generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    if dataset.file_meta is not None:
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID


def tiled(frame: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """The frame repeated (mirrored, so no seams) and cropped to rows x columns."""
    reps_y = -(-rows // frame.shape[0])
    reps_x = -(-columns // frame.shape[1])
    tile = np.block(
        [
            [frame[:, :: (-1 if x % 2 else 1)][:: (-1 if y % 2 else 1)] for x in range(reps_x)]
            for y in range(reps_y)
        ]
    )
    return np.ascontiguousarray(tile[:rows, :columns])


def monochrome_image(
    template: str | Path,
    target: str | Path,
    *,
    rows: int,
    columns: int,
    encoding: str = "explicit",
    study: str | None = None,
    series: str | None = None,
) -> Path:
    """Write a single-frame monochrome image of the given size made from ``template``."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}")
    dataset = _read(template)
    frame = dataset.pixel_array
    if frame.ndim != 2:
        raise ValueError(f"{template} is not a single-frame monochrome image")
    pixels = tiled(frame, rows, columns)
    dataset.Rows, dataset.Columns = rows, columns
    new_uids(dataset, study, series)
    for keyword in ("NumberOfFrames", "LossyImageCompression"):
        if keyword in dataset:
            delattr(dataset, keyword)
    if encoding == "jpeg-baseline":
        # 8-bit only (PS3.5 A.4.1): window the template's values into 0..255 first.
        low, high = np.percentile(pixels, (0.5, 99.5))
        eight = np.clip((pixels - low) / max(high - low, 1) * 255, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(eight).save(buffer, "JPEG", quality=90)
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
        dataset.PixelRepresentation = 0
        dataset.PhotometricInterpretation = "MONOCHROME2"
        for keyword in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
            if keyword in dataset:
                delattr(dataset, keyword)
        dataset.PixelData = encapsulate([buffer.getvalue()])
        dataset["PixelData"].VR = "OB"
        dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        dataset.LossyImageCompression = "01"
    else:
        dataset.PixelData = pixels.astype(frame.dtype).tobytes()
        dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        if encoding == "jpeg2000":
            dataset.compress(JPEG2000Lossless)
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path
