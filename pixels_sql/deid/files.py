"""De-identification of a file: the byte walk (fast.py) where it applies, the pydicom path
(transform.py) for every other file; and the outcome per path that the SQL functions return."""

from __future__ import annotations

from typing import NamedTuple

from pixels_sql.deid.fast import deidentify_fast
from pixels_sql.deid.keys import load_key
from pixels_sql.deid.profile import Profile
from pixels_sql.deid.transform import Deidentified, DeidError, deidentify_with_pydicom
from pixels_sql.errors import classify
from pixels_sql.io.sources import display_name, read_content


def deidentify(
    data: bytes,
    profile: Profile,
    key: bytes,
    *,
    name: str = "<bytes>",
    allow_burned_in: bool = False,
) -> Deidentified:
    """De-identify the PS3.10 file (or bare data set) ``data`` (docs/deidentification.md);
    raise :class:`~pixels_sql.errors.DicomReadError` with a reason for a file that is not one
    (``not_dicom``, ``truncated``, ``not_an_instance``, ...), or ``burned_in_unhandled`` for an
    image whose Burned In Annotation is YES (unless ``allow_burned_in``)."""
    if not data:
        raise DeidError(name, "empty", "the file has zero bytes")
    done = deidentify_fast(data, profile, key, name, allow_burned_in)
    if done is not None:
        return done
    return deidentify_with_pydicom(data, profile, key, name=name, allow_burned_in=allow_burned_in)


class DeidRow(NamedTuple):
    """One file's outcome (:func:`deidentify_file`): the new file and its mapping, or the
    reason it was not de-identified (a tuple: it crosses the helper process's pipe)."""

    data: bytes | None
    sop_instance_uid: str | None
    original_sop_instance_uid: str | None
    patient_id: str | None
    shift_days: int | None
    uids: dict[str, str] | None
    reason: str | None = None
    message: str | None = None


# A pseudo-option, not PS3.15's: write images whose Burned In Annotation is YES as they are.
ALLOW_BURNED_IN = "allow_burned_in"


def deidentify_file(path: str, options: tuple[str, ...]) -> DeidRow:
    """:func:`deidentify` of the file at ``path`` (any path io.sources opens) with the key of
    the settings; a file's failure is its reason, never an exception."""
    allow_burned_in = ALLOW_BURNED_IN in options
    profile = Profile.of([option for option in options if option != ALLOW_BURNED_IN])
    key = load_key()
    name = display_name(path)
    try:
        data = read_content(path)
        done = deidentify(data, profile, key, name=name, allow_burned_in=allow_burned_in)
    except Exception as exc:
        error = classify(name, exc)
        return DeidRow(None, None, None, None, None, None, error.reason, error.message)
    return DeidRow(
        done.data,
        done.sop_instance_uid,
        done.original_sop_instance_uid,
        done.patient_id,
        done.shift_days,
        done.uids,
    )
