"""A de-identified copy of a catalogued database (pixels_sql.deidentify, sql/deid/): a cohort
by a predicate, the copy ingested into its own database, the mapping in a third; incremental
(new, changed, deleted instances); a no-op re-run; the `pixels-sql deidentify` command."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pydicom
import pytest

from pixels_sql.deid.files import deidentify
from pixels_sql.deid.pixels import PixelPolicy
from pixels_sql.deid.profile import Profile
from pixels_sql.deidentify import deidentify_database
from pixels_sql.ingest.batch import ingest
from tests.conftest import TEST_DEID_KEY, copy_samples

ALLOW = PixelPolicy(allow_burned_in=True)  # the corpus has images that say they hold text

SOURCE = "deid_source"
OPTIONS = ("tcia", "allow_burned_in")


def live_uids(spark, database: str) -> set[str]:
    rows = spark.sql(
        f"SELECT SOPInstanceUID FROM `{database}`.object_catalog"
        " WHERE deleted_at IS NULL AND meta_error_reason IS NULL"
    ).collect()
    return {row[0] for row in rows}


def expected_uids(folder: Path, modality: str) -> set[str]:
    """The new SOP Instance UIDs of the folder's instances of ``modality``, by the transform."""
    profile = Profile.of([o for o in OPTIONS if o != "allow_burned_in"])
    found = set()
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if header.get("Modality") != modality:
                continue
            done = deidentify(path.read_bytes(), profile, TEST_DEID_KEY.encode(), policy=ALLOW)
        except Exception:
            continue
        found.add(done.sop_instance_uid)
    return found


def test_a_cohort_is_copied_mapped_and_kept_exact_incrementally(spark, tmp_path: Path) -> None:
    folder = copy_samples(tmp_path / "source")
    destination = tmp_path / "deid"
    spark.sql(f"DROP DATABASE IF EXISTS {SOURCE} CASCADE")
    ingest(spark, str(folder), SOURCE, thumbnails=False)

    def run() -> object:
        return deidentify_database(
            spark,
            SOURCE,
            str(destination),
            options=OPTIONS,
            where="Modality IN ('MR', 'CT')",
            thumbnails=False,
        )

    first = run()
    target, mapping = f"{SOURCE}_deid", f"{SOURCE}_deid_mapping"
    expected = expected_uids(folder, "MR") | expected_uids(folder, "CT")
    assert live_uids(spark, target) == expected
    assert first.counts["deid_pending"] >= len(expected)
    # No original UID or patient ID reaches the copy; the mapping has them, the copy not.
    originals = live_uids(spark, SOURCE)
    assert not originals & live_uids(spark, target)
    patients = {r[0] for r in spark.sql(f"SELECT PatientID FROM {SOURCE}.object_catalog").collect()}
    copied = {r[0] for r in spark.sql(f"SELECT PatientID FROM {target}.object_catalog").collect()}
    assert not (patients - {None, ""}) & copied
    mapped = spark.sql(
        f"SELECT original_sop_instance_uid, sop_instance_uid FROM {mapping}.deid_mapping"
        " WHERE reason IS NULL"
    ).collect()
    assert {row[1] for row in mapped} == expected
    assert {row[0] for row in mapped} <= originals
    for path in destination.rglob("*.dcm"):
        assert pydicom.dcmread(path).PatientIdentityRemoved == "YES"

    # A new CT, a changed MR (new patient name: same UIDs, new bytes), a deleted MR.
    new = pydicom.dcmread(folder / "ct" / "CT_small.dcm")
    new.SOPInstanceUID = pydicom.uid.generate_uid()
    new.save_as(folder / "ct" / "CT_new.dcm")
    changed = pydicom.dcmread(folder / "mr" / "MR_small.dcm")
    changed.PatientName = "CHANGED^NAME"
    changed.save_as(folder / "mr" / "MR_small.dcm")
    (folder / "mr" / "MR_small_RLE.dcm").unlink()
    ingest(spark, str(folder), SOURCE, thumbnails=False)
    second = run()
    assert (second.counts["deid_pending"], second.counts["deid_gone"]) == (2, 1)
    expected = expected_uids(folder, "MR") | expected_uids(folder, "CT")
    assert live_uids(spark, target) == expected
    written = {pydicom.dcmread(p).SOPInstanceUID for p in destination.rglob("*.dcm")}
    assert written == expected  # the deleted instance's copy is gone too
    # Nothing new: nothing done, nothing changes.
    third = run()
    assert (third.counts["deid_pending"], third.counts["deid_gone"]) == (0, 0)
    assert live_uids(spark, target) == expected
    uids = spark.sql(f"SELECT count(*) FROM {mapping}.deid_uids").first()[0]
    assert uids >= len(expected)


def test_the_same_instance_gets_the_same_copy_in_another_run(tmp_path: Path) -> None:
    data = (Path(pydicom.data.get_testdata_file("CT_small.dcm"))).read_bytes()
    profile = Profile.of(["tcia"])
    first = deidentify(data, profile, TEST_DEID_KEY.encode())
    assert deidentify(data, profile, TEST_DEID_KEY.encode()).data == first.data
    assert pydicom.dcmread(io.BytesIO(first.data)).PatientID == first.patient_id
    assert shutil.which("dcmdump")


@pytest.mark.parametrize("where", ["Modality = 'CT'"])
def test_options_and_names_are_checked_before_anything_runs(spark, tmp_path: Path, where) -> None:
    with pytest.raises(Exception, match="unknown de-identification option"):
        deidentify_database(spark, SOURCE, str(tmp_path), options=("keep_faces",), where=where)
    with pytest.raises(ValueError, match="is not a database name"):
        deidentify_database(spark, "x;y", str(tmp_path), where=where)
    assert not any(tmp_path.iterdir())


def test_a_run_killed_while_writing_then_run_again_gives_the_clean_result(tmp_path: Path) -> None:
    """SIGKILL to the whole command (driver JVM, Python workers, helpers) while copies are
    being written; the next run's copies and mapping are those the transform gives."""
    import os
    import signal
    import subprocess
    import sys
    import time

    folder = tmp_path / "source"
    folder.mkdir()
    template = pydicom.dcmread(Path(pydicom.data.get_testdata_file("CT_small.dcm")))
    for number in range(30):
        template.SOPInstanceUID = pydicom.uid.generate_uid()
        template.PatientID = f"P{number % 6}"
        template.save_as(folder / f"{number}.dcm")
    home, destination = tmp_path / "home", tmp_path / "copy"

    def command(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "pixels_sql.cli", *args, "--home", str(home)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    # Refused before any home or Spark: an unknown option, no key.
    refused = command("deidentify", "--from", "pixels", "--to", str(destination), "--option", "x")
    assert refused.wait(60) != 0 and refused.stderr is not None
    assert "unknown de-identification option 'x'" in refused.stderr.read()
    keyless = {k: v for k, v in os.environ.items() if not k.startswith("PIXELS_SQL_DEID_KEY")}
    no_key = subprocess.run(
        [sys.executable, "-m", "pixels_sql.cli", "deidentify", "--from", "pixels", "--to", "x"],
        capture_output=True,
        text=True,
        env={**keyless, "PIXELS_SQL_HOME": str(home)},
        timeout=60,
    )
    assert no_key.returncode == 1 and "no de-identification key" in no_key.stderr
    assert "Traceback" not in no_key.stderr and not home.exists()
    ingested = command("ingest", str(folder), "--no-thumbnails", "--master", "local[2]")
    assert ingested.wait(600) == 0, ingested.stderr.read()[-3000:] if ingested.stderr else ""
    deid = ("deidentify", "--from", "pixels", "--to", str(destination), "--no-thumbnails")
    killed = command(*deid, "--master", "local[1]")
    deadline = time.monotonic() + 300
    while not any(destination.rglob("*.dcm")):
        assert killed.poll() is None, killed.stderr.read()[-3000:] if killed.stderr else ""
        assert time.monotonic() < deadline, "no copy was written in 300 s"
        time.sleep(0.01)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    written_before = len(list(destination.rglob("*.dcm")))
    again = command(*deid, "--master", "local[2]")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    profile = Profile.of([])
    expected = {}
    for path in folder.iterdir():
        done = deidentify(path.read_bytes(), profile, TEST_DEID_KEY.encode())
        expected[f"{done.patient_id}/{done.sop_instance_uid}.dcm"] = done.data
    copies = {str(p.relative_to(destination)): p.read_bytes() for p in destination.rglob("*.dcm")}
    assert copies.keys() == expected.keys(), (written_before, out)
    assert copies == expected
    assert not [p for p in destination.rglob(".*")]  # no partial file left behind
    assert "deidentify: 30 de-identified (0 not:" in out, out
