"""dbx.pixels' DICOM transformers, as thin column expressions over the SQL functions.

Each transformer adds columns that call the registered SQL functions (``dicom_meta_result``,
``dicom_thumbnail_result``) by name, so a DataFrame built here computes exactly what the
pipeline and every SQL client compute: there is one DICOM implementation, in
``pixels_sql/dicom/``, behind the functions.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from pixels_sql.pixels.transformers import METADATA_KEY, Transformer, UnsupportedError, marked

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

DEFAULT_THUMBNAIL_SIZE = 256
# What Databricks notebooks read to show a BINARY column as an image (dbx.pixels sets it too).
PNG_ANNOTATION = {"spark.contentAnnotation": json.dumps({"mimeType": "image/png"})}
# The listing's own reason for a row (catalog(): a dangling link, a pipe, a hostile member):
# such a row is not opened, as in sql/20_meta.sql.
LISTING_REASON = "listing_reason"
LISTING_MESSAGE = "listing_message"


def listing_failure(df: DataFrame) -> tuple[Column, Column]:
    """The listing's reason and message of each row of ``df``: NULL where it gave none, or
    where the DataFrame does not come from :meth:`Catalog.catalog
    <pixels_sql.pixels.Catalog.catalog>`."""
    reason, message = (
        F.col(name) if name in df.columns else F.lit(None)
        for name in (LISTING_REASON, LISTING_MESSAGE)
    )
    return reason, message


class FileTransformer(Transformer):
    """Base of the transformers that open each file of a catalog DataFrame, holding the
    constructor fields dbx.pixels gives them all: the ``catalog``, the path column
    ``inputCol``, the ``outputCol`` of the header, ``useVariant`` (False: the header as a JSON
    STRING), and ``basePath`` and ``permissive``, kept as given (the SQL functions take Spark's
    paths as they are, and a file's failure is always a row)."""

    def __init__(
        self,
        catalog: Any,
        inputCol: str,
        outputCol: str,
        basePath: str,
        useVariant: bool,
        permissive: bool,
    ) -> None:
        super().__init__()
        self.catalog = catalog
        self.inputCol = inputCol
        self.outputCol = outputCol
        self.basePath = basePath
        self.useVariant = useVariant
        self.permissive = permissive


class DicomMetaExtractor(FileTransformer):
    """Add each file's DICOM header as ``meta`` (VARIANT), through ``dicom_meta_result``.

    ``meta`` is the DICOM JSON model of ``dicom_meta(path)``, NULL for a file that is not
    readable DICOM; ``meta_error_reason`` and ``meta_error_message`` say why (``not_dicom``,
    ``truncated``, ``empty``, …) — dbx.pixels writes an error text into ``meta`` instead. The
    header is read once per file and a bad file never fails the query. Rows that
    :meth:`Catalog.catalog <pixels_sql.pixels.Catalog.catalog>` listed with a reason (a dangling
    link, a pipe, a hostile zip member) are not opened and keep that reason.

    ``inputCol`` defaults to ``path``: the functions take Spark's paths (``file:/…``, zip
    member paths) as they are. ``useVariant=False`` gives ``meta`` as a JSON STRING.
    ``deep=True`` (pixel data in the JSON and a file hash) and ``remove_un_tags=True`` raise
    :class:`UnsupportedError` naming the alternative; ``basePath``, ``maxWorkers`` and
    ``permissive`` change nothing (Spark's tasks read the files; failures are always rows).

    >>> from pixels_sql.pixels import Catalog
    >>> from pixels_sql.pixels.dicom import DicomMetaExtractor
    >>> catalog = Catalog(spark, table="pixels_examples.object_catalog")
    >>> meta_df = DicomMetaExtractor(catalog).transform(catalog.catalog(folder))
    >>> rows = meta_df.orderBy("relative_path").collect()
    >>> [(r.relative_path, r.meta is not None, r.meta_error_reason) for r in rows]
    [('CT_small.dcm', True, None), ('MR_small.dcm', True, None), ('README.txt', False, 'not_dicom')]
    >>> meta_df.selectExpr("dicom_tag(meta, 'Modality') AS modality").where("modality IS NOT NULL").distinct().orderBy("modality").collect()
    [Row(modality='CT'), Row(modality='MR')]
    """  # noqa: E501 - doctest lines

    def __init__(
        self,
        catalog: Any = None,
        inputCol: str = "path",
        outputCol: str = "meta",
        basePath: str = "dbfs:/",
        deep: bool = False,
        useVariant: bool = True,
        maxWorkers: int | None = None,
        remove_un_tags: bool = False,
        permissive: bool = False,
    ) -> None:
        super().__init__(catalog, inputCol, outputCol, basePath, useVariant, permissive)
        if deep:
            raise UnsupportedError(
                "DicomMetaExtractor(deep=True): pixels-sql reads headers only; the pixel data"
                " and every large value are BulkDataURI byte ranges in meta (read them at"
                " offset/length, or as frames through pixels-sql serve's DICOMweb WADO-RS), and"
                " a file hash is sha2(content, 256) over read_files(path, format =>"
                " 'binaryFile')"
            )
        if remove_un_tags:
            raise UnsupportedError(
                "DicomMetaExtractor(remove_un_tags=True): meta keeps every element as the file"
                " has it (UN values as InlineBinary or BulkDataURI); pick the attributes you"
                " need with dicom_tag(meta, key) or the catalog's typed columns instead"
            )
        self.maxWorkers = maxWorkers

    def _transform(self, df: DataFrame) -> DataFrame:
        self.check_input_type(df.schema)
        path = F.col(self.inputCol)
        listed, listed_message = listing_failure(df)
        # A NULL path is not opened (a pipe would block a reader; the listing said why).
        result = F.call_function("dicom_meta_result", F.when(listed.isNull(), path))
        # One column holding the result, so that the function runs once per row.
        scratch = "__pixels_sql_meta_result"
        parsed = F.try_parse_json(F.col(f"{scratch}.meta"))
        too_large = F.col(f"{scratch}.meta").isNotNull() & parsed.isNull()
        reason = (
            F.when(listed.isNotNull(), listed)
            .when(F.col(f"{scratch}.reason").isNotNull(), F.col(f"{scratch}.reason"))
            .when(too_large, F.lit("too_large"))
        )
        message = (
            F.when(listed.isNotNull(), listed_message)
            .when(F.col(f"{scratch}.reason").isNotNull(), F.col(f"{scratch}.message"))
            .when(
                too_large,
                F.concat(
                    F.lit("DICOM JSON of "),
                    F.length(F.col(f"{scratch}.meta")).cast("string"),
                    F.lit(" characters does not fit a VARIANT value"),
                ),
            )
            # A header read with a warning ("trailing_bytes: ..."): the reason stays NULL.
            .otherwise(F.col(f"{scratch}.message"))
        )
        meta = parsed if self.useVariant else F.when(parsed.isNotNull(), F.col(f"{scratch}.meta"))
        return (
            df.withColumn(scratch, result)
            .withColumns(
                {
                    self.outputCol: marked(meta, "meta"),
                    "meta_error_reason": marked(reason, "meta_error_reason"),
                    "meta_error_message": marked(message, "meta_error_message"),
                }
            )
            .drop(scratch)
        )


class DicomThumbnailExtractor(Transformer):
    """Add a PNG thumbnail of each image as ``thumbnail`` (BINARY), via ``dicom_thumbnail_result``.

    The image as a viewer shows it (modality and VOI LUTs, MONOCHROME1, palette and YBR colour,
    the middle frame of a multi-frame image, aspect ratio kept), its longer side ``maxSize``
    pixels (256). ``thumbnail_error_reason`` and ``thumbnail_error_message`` say why a row has
    none (``no_pixel_data``, ``undecodable``, …). Rows whose header could not be read (a
    ``meta_error_reason`` from :class:`DicomMetaExtractor`) are not rendered. dbx.pixels gives
    a Spark image struct drawn by matplotlib (``method``); here both methods give the same
    PNG, annotated so that Databricks notebooks display it as an image.
    :meth:`Catalog.save <pixels_sql.pixels.Catalog.save>` renders the table's thumbnails at the
    ``maxSize`` used here.

    >>> from pixels_sql.pixels import Catalog
    >>> from pixels_sql.pixels.dicom import DicomMetaExtractor, DicomThumbnailExtractor
    >>> catalog = Catalog(spark, table="pixels_examples.object_catalog")
    >>> meta_df = DicomMetaExtractor(catalog).transform(catalog.catalog(folder))
    >>> thumbnail_df = DicomThumbnailExtractor(maxSize=64).transform(meta_df)
    >>> rows = thumbnail_df.orderBy("relative_path").collect()
    >>> [(r.relative_path, bytes(r.thumbnail[:4]) if r.thumbnail else None) for r in rows]
    [('CT_small.dcm', b'\\x89PNG'), ('MR_small.dcm', b'\\x89PNG'), ('README.txt', None)]
    """

    def __init__(
        self,
        inputCol: str = "path",
        outputCol: str = "thumbnail",
        method: str = "matplotlib",
        maxSize: int = DEFAULT_THUMBNAIL_SIZE,
    ) -> None:
        super().__init__()
        if method not in ("matplotlib", "pillow"):
            raise ValueError(f"method must be 'matplotlib' or 'pillow', not {method!r}")
        if int(maxSize) < 1:
            raise ValueError(f"maxSize must be a positive number of pixels, not {maxSize!r}")
        self.inputCol = inputCol
        self.outputCol = outputCol
        self.method = method
        self.maxSize = int(maxSize)

    def _transform(self, df: DataFrame) -> DataFrame:
        self.check_input_type(df.schema)
        path = F.col(self.inputCol)
        if "meta_error_reason" in df.columns:
            path = F.when(F.col("meta_error_reason").isNull(), path)
        scratch = "__pixels_sql_thumbnail_result"
        result = F.call_function("dicom_thumbnail_result", path, F.lit(self.maxSize))
        settings = {"thumbnail_size": self.maxSize}
        thumbnail = F.col(f"{scratch}.thumbnail").alias(
            self.outputCol,
            metadata={
                **PNG_ANNOTATION,
                METADATA_KEY: {"column": "thumbnail", **settings},
            },
        )
        return (
            df.withColumn(scratch, result)
            .withColumns(
                {
                    self.outputCol: thumbnail,
                    "thumbnail_error_reason": marked(
                        F.col(f"{scratch}.reason"), "thumbnail_error_reason"
                    ),
                    "thumbnail_error_message": marked(
                        F.col(f"{scratch}.message"), "thumbnail_error_message"
                    ),
                }
            )
            .drop(scratch)
        )


class DicomPillowThumbnailExtractor(DicomThumbnailExtractor):
    """dbx.pixels' Pillow thumbnail: the same PNG as :class:`DicomThumbnailExtractor`.

    dbx.pixels resized every image to 256x256 (distorting it); here the aspect ratio is kept
    and the longer side is ``maxSize`` (256).

    >>> from pixels_sql.pixels import Catalog
    >>> from pixels_sql.pixels.dicom import DicomPillowThumbnailExtractor
    >>> files = Catalog(spark, table="pixels_examples.object_catalog").catalog(folder)
    >>> png = DicomPillowThumbnailExtractor(maxSize=32).transform(files.where("extension = 'dcm'"))
    >>> import io, PIL.Image
    >>> sorted(PIL.Image.open(io.BytesIO(r.thumbnail)).size for r in png.collect())
    [(32, 32), (32, 32)]
    """

    def __init__(
        self,
        inputCol: str = "path",
        outputCol: str = "thumbnail",
        maxSize: int = DEFAULT_THUMBNAIL_SIZE,
    ) -> None:
        super().__init__(inputCol=inputCol, outputCol=outputCol, method="pillow", maxSize=maxSize)


class DicomPatcher(Transformer):
    """dbx.pixels' image patcher (tiles of ``size_x`` x ``size_y`` pixels): not provided.

    In dbx.pixels it is a placeholder (fixed 4000x6000 images, a dummy ``local_path``, no
    patch written). pixels-sql has no pixel-array function to tile; constructing one raises
    :class:`UnsupportedError` naming what to use instead: ``dicom_thumbnail(path, max_size)``
    for a whole image rendered at any size, and pixels-sql serve's DICOMweb frames
    (``…/frames/{n}``) or the ``BulkDataURI`` byte ranges in ``meta`` for the pixel data.

    >>> from pixels_sql.pixels.dicom import DicomPatcher
    >>> DicomPatcher()
    Traceback (most recent call last):
    ...
    pixels_sql.pixels.transformers.UnsupportedError: DicomPatcher: ...
    """

    def __init__(
        self,
        size_x: int = 512,
        size_y: int = 512,
        stride_x: int = 512,
        stride_y: int = 512,
        inputCol: str = "path",
        outputCol: str = "patch",
        basePath: str = "dbfs:/",
        **_: Any,
    ) -> None:
        raise UnsupportedError(
            "DicomPatcher: pixels-sql does not cut images into patches (in dbx.pixels it is an"
            " unfinished placeholder that writes none). Render a whole image at the size you"
            " need with dicom_thumbnail(path, max_size), or read the pixel data itself:"
            " frames through pixels-sql serve's DICOMweb (WADO-RS .../frames/{n}) or the"
            " BulkDataURI byte range of PixelData (7FE00010) in meta"
        )

    def _transform(self, df: DataFrame) -> DataFrame:  # never reached: __init__ raises
        raise UnsupportedError("DicomPatcher")
