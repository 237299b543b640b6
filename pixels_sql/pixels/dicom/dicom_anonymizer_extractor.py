"""dbx.pixels' ``DicomAnonymizerExtractor``, over the SQL function ``dicom_deidentify_write``.

dbx.pixels de-identifies with dicognito and FF3 format-preserving encryption under a key given
in code; here each file goes through pixels-sql's one de-identification (PS3.15 Basic Profile
and its options, keyed replacements, ``pixels_sql/deid/``), with the key of the setting
``PIXELS_SQL_DEID_KEY_FILE``. The module keeps dbx.pixels' name, so its import form
``from ….dicom.dicom_anonymizer_extractor import DicomAnonymizerExtractor`` works too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from pyspark.sql import functions as F

from pixels_sql.deid.files import profile_of
from pixels_sql.deid.profile import BASIC, OPTIONS, PRESETS, Profile, option_key
from pixels_sql.deid.standard import read_profile
from pixels_sql.io.paths import to_local_path
from pixels_sql.pixels.dicom.extractors import (
    DicomMetaExtractor,
    FileTransformer,
    listing_failure,
)
from pixels_sql.pixels.transformers import METADATA_KEY, UnsupportedError, marked, path_columns

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

# dbx.pixels' defaults, accepted as they are: what they ask for is what pixels-sql does anyway
# (the UIDs and the Patient ID get keyed replacements), see _check_encrypt_tags.
DBX_ENCRYPT_TAGS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "AccessionNumber",
    "PatientID",
)
# The pseudo-option of the SQL functions that finds burned-in text by OCR and blacks it out
# where no pixel rule applies (pixels_sql/deid/files.py profile_of).
OCR_OPTION = "ocr"
# The folder of the catalog's volume the copies go to by default, as dbx.pixels'.
ANONYMIZED_FOLDER = "anonymized"
# The mapping each row keeps: the SQL function's struct fields, read by name (the struct gains
# fields over time), as deid_<field> columns: the names of pixels-sql deidentify's mapping
# table (sql/deid/10_deidentify.sql deid_instances) with a prefix.
MAPPING_FIELDS = (
    "original_sop_instance_uid",
    "sop_instance_uid",
    "patient_id",
    "shift_days",
    "uids",
    "cleaned_regions",
)


class DicomAnonymizerExtractor(FileTransformer):
    """De-identify each file into a copy under ``anonymization_base_path``; the rows point to
    the copies (``path``, ``local_path``, ``relative_path``) with their header as ``meta``.

    Each file goes through ``dicom_deidentify_write(path, destination, 'basic', options)``:
    DICOM PS3.15's Basic Profile with the options named (docs/deidentification.md), every
    replacement a keyed hash — the same original UID gives the same new UID in every file and
    every run — with the key of the setting ``PIXELS_SQL_DEID_KEY_FILE`` (or
    ``PIXELS_SQL_DEID_KEY``), never one given in code. A copy is written whole or not at all to
    ``<anonymization_base_path>/<pseudonymous patient>/<new SOP Instance UID>.dcm``; the
    default folder is ``<catalog's volume>/anonymized``, as dbx.pixels'.

    ``anonym_mode`` is required, as in dbx.pixels: ``"METADATA"`` de-identifies the header
    (pixel rules of ``PIXELS_SQL_DEID_PIXEL_RULES`` still apply, and an image whose Burned In
    Annotation is YES that no rule covers is not written: ``burned_in_unhandled``);
    ``"COMPLETE"`` also blacks out burned-in text found by OCR where no rule applies (the
    ``ocr`` option). ``"IMAGE"`` (pixels only, the header kept) raises
    :class:`UnsupportedError`. ``options`` are the PS3.15 option names (``'tcia'``,
    ``'retain_longitudinal_modified_dates'``, …) or ``'allow_burned_in'``.

    Added columns: ``meta`` (the copy's header as ``DicomMetaExtractor`` gives it, VARIANT or
    with ``useVariant=False`` STRING; NULL where no copy was written),
    ``meta_error_reason``/``meta_error_message`` (why ``meta`` is NULL), and the mapping:
    ``deid_source_path`` (the file de-identified), ``deid_original_sop_instance_uid``,
    ``deid_sop_instance_uid``, ``deid_patient_id`` (the pseudonym), ``deid_shift_days``,
    ``deid_uids`` (every UID replaced, original → new), ``deid_cleaned_regions`` (the
    rectangles blacked out, and what found them: a pixel rule's name or ``ocr``),
    ``deid_reason`` and ``deid_message`` (why no copy was written: ``not_dicom``,
    ``truncated``, ``burned_in_unhandled``, …). A file that cannot be de-identified is a row
    with its reason and keeps its paths; nothing is written for it. ``rowId``,
    ``original_path``, ``extension`` and ``path_tags`` are the copy's where the DataFrame has
    them (``original_path`` NULL without a copy, so that ``Catalog.save`` catalogues the
    copies only). ``Catalog.save`` of the result catalogues the copies (the mapping never goes
    into the table): save it to a database of its own,
    ``Catalog(spark, table="pixels_deid.object_catalog")``.

    The copies are written when Spark computes the rows, again by each action (the same bytes
    to the same paths): save or collect the result once. Columns computed from the source
    files before this transformer (a thumbnail) stay the source's: de-identify first.
    ``fp_key`` and ``fp_tweak`` raise :class:`UnsupportedError` (the key is the setting's);
    so do ``encrypt_tags`` other than dbx.pixels' default, ``keep_tags`` naming an attribute
    the profile with ``options`` does not keep (dates: ``retain_longitudinal_full_dates``),
    ``save_anonymized_dicom=False`` and a streaming DataFrame. ``basePath`` and ``permissive``
    change nothing.

    >>> from pixels_sql.pixels import Catalog
    >>> from pixels_sql.pixels.dicom import DicomAnonymizerExtractor
    >>> catalog = Catalog(spark, table="pixels_examples.object_catalog")
    >>> anonymized = DicomAnonymizerExtractor(
    ...     catalog, anonym_mode="METADATA", anonymization_base_path=f"{workdir}/anonymized"
    ... ).transform(catalog.catalog(folder))
    >>> rows = anonymized.orderBy("deid_source_path").collect()
    >>> [(r.relative_path.endswith(".dcm"), r.deid_reason) for r in rows]
    [(True, None), (True, None), (False, 'not_dicom')]
    >>> rows[0].path.startswith(f"file:{workdir}/anonymized/PX")
    True
    >>> anonymized.selectExpr("dicom_tag(meta, 'PatientIdentityRemoved') AS removed").where("removed IS NOT NULL").collect()
    [Row(removed='YES'), Row(removed='YES')]
    """  # noqa: E501 - a doctest line

    # dbx.pixels' modes (IMAGE raises here).
    ANONYMIZATION_MODES: ClassVar[tuple[str, ...]] = ("COMPLETE", "METADATA", "IMAGE")

    def __init__(
        self,
        catalog: Any = None,
        inputCol: str = "path",
        outputCol: str = "meta",
        basePath: str = "dbfs:/",
        anonym_mode: str | None = None,
        fp_key: str | None = None,
        fp_tweak: str | None = None,
        encrypt_tags: Iterable[str] | None = DBX_ENCRYPT_TAGS,
        keep_tags: Iterable[str] | None = None,
        anonymization_base_path: str | None = None,
        save_anonymized_dicom: bool = True,
        useVariant: bool = True,
        permissive: bool = False,
        options: Iterable[str] | str | None = None,
    ) -> None:
        super().__init__(catalog, inputCol, outputCol, basePath, useVariant, permissive)
        mode = str(anonym_mode).upper()
        if mode == "IMAGE":
            raise UnsupportedError(
                "DicomAnonymizerExtractor(anonym_mode='IMAGE'): pixels-sql does not clean the"
                " pixels of a file whose header keeps the patient's identity; use"
                " anonym_mode='COMPLETE' (header de-identified, burned-in text found by OCR"
                " blacked out)"
            )
        if mode not in self.ANONYMIZATION_MODES:
            raise ValueError(
                f"Invalid anonymization mode {anonym_mode}, must be one of"
                f" {list(self.ANONYMIZATION_MODES[:2])}"
            )
        if fp_key is not None or fp_tweak is not None:
            # Never the key itself in the message: it would land in logs and notebooks.
            raise UnsupportedError(
                "DicomAnonymizerExtractor(fp_key=..., fp_tweak=...): pixels-sql never takes its"
                " key from code; remove fp_key and fp_tweak and set PIXELS_SQL_DEID_KEY_FILE"
                " (a file of at least 16 random bytes) in the environment of the Spark"
                " workers. There is no format-preserving encryption: new UIDs and pseudonyms"
                " are keyed hashes (HMAC-SHA-256), which nobody can reverse"
            )
        if not save_anonymized_dicom:
            raise UnsupportedError(
                "DicomAnonymizerExtractor(save_anonymized_dicom=False): the transformer writes"
                " the de-identified copies (its rows point to them); to de-identify without"
                " writing, use the SQL function dicom_deidentify_result(path, 'basic',"
                " options) (the new file's bytes and the mapping), or"
                " dicom_deidentify_error(path) to check which files would fail"
            )
        chosen = [options] if isinstance(options, str) else [str(o) for o in options or ()]
        if mode == "COMPLETE" and OCR_OPTION not in map(option_key, chosen):
            chosen.append(OCR_OPTION)
        # Checked now, as the function checks them before it reads a file: an unknown option
        # (or OCR without Tesseract) fails here instead of at the first action.
        profile = profile_of(tuple(chosen))[0]
        _check_encrypt_tags(encrypt_tags)
        _check_keep_tags(keep_tags, profile, chosen)
        self.anonym_mode = mode
        self.encrypt_tags = encrypt_tags
        self.keep_tags = keep_tags
        self.anonymization_base_path = destination_folder(catalog, anonymization_base_path)
        self.save_anonymized_dicom = save_anonymized_dicom
        self.options = tuple(chosen)

    def _transform(self, df: DataFrame) -> DataFrame:
        if df.isStreaming:
            raise UnsupportedError(
                "DicomAnonymizerExtractor on a streaming DataFrame: a streaming save"
                " catalogues the source folder's stream, not the copies; de-identify batch"
                " DataFrames (catalog(path) again picks up new files), or run"
                " `pixels-sql deidentify`, which de-identifies only what changed"
            )
        self.check_input_type(df.schema)
        destination = self.anonymization_base_path
        # The folder the copies are catalogued from (Catalog.save lists it) exists even when
        # no copy is written.
        os.makedirs(destination, exist_ok=True)
        listed, listed_message = listing_failure(df)
        # A row the listing gave a reason (a pipe, a dangling link) is not opened.
        source = F.when(listed.isNull(), F.col(self.inputCol))
        result = F.call_function(
            "dicom_deidentify_write",
            source,
            F.lit(destination),
            F.lit(BASIC),
            F.array(*(F.lit(option) for option in self.options)).cast("array<string>"),
        )
        # One column holding the result, so that the function runs once per row; its fields
        # are read by name.
        scratch, copy_column = "__pixels_sql_deid_result", "__pixels_sql_deid_copy"

        def field(name: str) -> Column:
            return F.col(scratch).getField(name)

        written = field("output_path").isNotNull()
        copy = F.concat(F.lit("file:"), field("output_path"))
        source_path = F.col("path") if "path" in df.columns else F.col(self.inputCol)
        reason = F.coalesce(listed, field("reason"))
        message = F.when(listed.isNotNull(), listed_message).otherwise(field("message"))
        with_copy = df.withColumn(scratch, result).withColumn(copy_column, F.when(written, copy))
        # The copy's header, read back as DicomMetaExtractor reads any file.
        with_meta = DicomMetaExtractor(
            inputCol=copy_column, outputCol=self.outputCol, useVariant=self.useVariant
        )._transform(with_copy)
        copied = F.col(copy_column)
        # Catalog.save catalogues the files under the folder this names: the copies'.
        catalog_settings = {METADATA_KEY: {"catalog": {"path": destination}}}
        columns = {
            "deid_source_path": marked(source_path, "deid_source_path"),
            **{f"deid_{name}": marked(field(name), f"deid_{name}") for name in MAPPING_FIELDS},
            "deid_reason": marked(reason, "deid_reason"),
            "deid_message": marked(message, "deid_message"),
            "path": F.when(written, copied)
            .otherwise(source_path)
            .alias("path", metadata=catalog_settings),
            # The copy's header read, or why there is no copy.
            "meta_error_reason": marked(
                F.when(written, F.col("meta_error_reason")).otherwise(reason), "meta_error_reason"
            ),
            "meta_error_message": marked(
                F.when(written, F.col("meta_error_message")).otherwise(message),
                "meta_error_message",
            ),
        }
        # The path columns of the copy as Catalog.save will compute them (relative to the
        # folder of copies); the source's where nothing was written.
        computed = path_columns(copied, destination)
        for name in ("relative_path", "local_path"):
            kept = F.col(name) if name in df.columns else path_columns(source_path)[name]
            columns[name] = marked(F.when(written, computed[name]).otherwise(kept), name)
        for name in ("extension", "path_tags"):
            if name in df.columns:
                columns[name] = marked(F.when(written, computed[name]).otherwise(F.col(name)), name)
        if "rowId" in df.columns:
            columns["rowId"] = F.when(written, F.xxhash64(copied)).otherwise(F.col("rowId"))
        if "original_path" in df.columns:
            # The listed file of a copy is the copy; a row without one has none to catalogue.
            columns["original_path"] = marked(F.when(written, copied), "original_path")
        return with_meta.withColumns(columns).drop(scratch, copy_column)


def destination_folder(catalog: Any, base: str | None) -> str:
    """The local folder the copies go to: ``base`` (a folder, ``file:`` or ``dbfs:/`` URI) or
    ``<catalog's volume>/anonymized``, absolute and with links resolved, as the function
    resolves it where it writes.

    >>> destination_folder(None, "file:/data/deid/") == os.path.realpath("/data/deid")
    True
    >>> destination_folder(None, "s3://bucket/deid")
    Traceback (most recent call last):
    ...
    pixels_sql.pixels.transformers.UnsupportedError: anonymization_base_path 's3://bucket/deid': ...
    """
    if base is None:
        volume = getattr(catalog, "volume_path", None)
        if volume is None:
            raise ValueError(
                "DicomAnonymizerExtractor: give anonymization_base_path (the folder for the"
                " de-identified copies), or a Catalog whose volume holds them"
            )
        base = f"{volume}/{ANONYMIZED_FOLDER}"
    local = to_local_path(str(base))
    if "://" in local:
        raise UnsupportedError(
            f"anonymization_base_path {base!r}: the copies are written to a local or mounted"
            " folder (a /Volumes or /dbfs mount, a shared file system); object storage is"
            " read, not written, by pixels-sql"
        )
    return os.path.realpath(os.path.abspath(os.path.expanduser(local)))


# The options that keep attributes, and the presets, as the profile's registries name them.
_KEEPING_OPTIONS = ", ".join(
    [*(name for name in OPTIONS if name.startswith("retain_")), *(f"'{p}'" for p in PRESETS)]
)


def _check_encrypt_tags(encrypt_tags: Iterable[str] | None) -> None:
    """dbx.pixels' default (or none) is what the profile does anyway: the UIDs and the Patient
    ID get keyed replacements (the Accession Number is emptied); any other choice of
    attributes to encrypt has no counterpart."""
    if isinstance(encrypt_tags, str):
        encrypt_tags = (encrypt_tags,)
    chosen = set(encrypt_tags or ())
    if chosen and chosen != set(DBX_ENCRYPT_TAGS):
        raise UnsupportedError(
            f"DicomAnonymizerExtractor(encrypt_tags={tuple(encrypt_tags or ())!r}): there is no"
            " format-preserving encryption here; every UID gets a keyed replacement (2.25.…)"
            " and the Patient ID and Name keyed pseudonyms, each other attribute its PS3.15"
            f" Basic Profile action; keep attributes with options=[...] ({_KEEPING_OPTIONS})"
        )


def _check_keep_tags(keep_tags: Iterable[str] | None, profile: Profile, options: list[str]) -> None:
    """Every attribute of ``keep_tags`` must be kept by ``profile`` (its action K, or one the
    profile does not touch); otherwise :class:`UnsupportedError` naming the options that keep
    (or clean) each one. Kept values are never put back behind the profile's back."""
    from pydicom.datadict import tag_for_keyword

    if not keep_tags:
        return
    if isinstance(keep_tags, str):
        keep_tags = (keep_tags,)
    # By tag: keywords name fixed tags (repeating groups such as 60xx have none).
    rows = {row.tag: row for row in read_profile()}
    not_kept = []
    for keyword in keep_tags:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"keep_tags: {keyword!r} is not a DICOM keyword")
        row = rows.get(f"{tag:08X}")
        if row is not None and profile.action_for_row(row).code != "K":
            keeping = [repr(name) for name, code in row.options.items() if code == "K"]
            cleaning = [repr(name) for name, code in row.options.items() if code == "C"]
            ways = []
            if keeping:
                ways.append(f"kept by {' or '.join(keeping)}")
            if cleaning:
                ways.append(f"cleaned by {' or '.join(cleaning)}")
            not_kept.append(f"{keyword} ({'; '.join(ways) or 'no option keeps it'})")
    if not_kept:
        raise UnsupportedError(
            f"DicomAnonymizerExtractor(keep_tags=...): the Basic Profile with options"
            f" {options!r} does not keep {', '.join(not_kept)}: choose the options"
            " (options=[...]) instead of keep_tags; pixels-sql keeps an attribute only where a"
            " PS3.15 option does"
        )
