"""A wheel of the project carries what an installed pixels-sql needs beyond the checkout: the
pipeline's SQL scripts, the read_files extension jar and the compiled header reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PIPELINE_SCRIPTS = sorted(p.name for p in (ROOT / "sql").glob("*.sql"))
DEID_SCRIPTS = sorted(p.name for p in (ROOT / "sql" / "deid").glob("*.sql"))

# Run with only the unpacked wheel ahead of the test environment's site-packages.
INSPECT = """
import json, sys
import pixels_sql.cli as cli
from pixels_sql.dicom import fastmeta
from pixels_sql.pipeline import PIPELINE_DIR
from pixels_sql.scripts import load_scripts
from pixels_sql.session import jar_path
statements = load_scripts([PIPELINE_DIR], {"path": "/data/dicom"})
print(json.dumps({
    "package": cli.__file__,
    "pipeline_dir": str(PIPELINE_DIR),
    "statements": len(statements),
    "jar": str(jar_path()),
    "compiled": fastmeta.is_available(),
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("pixels_sql-*.whl")
    return found


def test_the_wheel_carries_scripts_jar_and_compiled_reader(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert [n.split("/")[-1] for n in names if n.startswith("pixels_sql/sql/")] == (
        PIPELINE_SCRIPTS + DEID_SCRIPTS
    )
    assert "pixels_sql/jars/pixels-sql-extensions.jar" in names
    assert any(n.startswith("pixels_sql/dicom/_fastmeta.") and n.endswith(".so") for n in names)
    # PS3.15's tables, which de-identification reads at run time
    assert "pixels_sql/deid/data/confidentiality-profile.csv" in names
    assert "pixels_sql/deid/data/safe-private.csv" in names
    # the starter rules of burned-in annotation (Clean Pixel Data), read at run time too
    assert "pixels_sql/deid/data/pixel-rules.toml" in names


def test_an_installed_wheel_finds_its_own_scripts_and_jar(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    result = subprocess.run(
        [sys.executable, "-c", INSPECT],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the checkout: its sql/ and jars/ must not be what is found
        env={**os.environ, "PYTHONPATH": str(target)},
    )
    found = json.loads(result.stdout)
    assert found["package"].startswith(str(target))
    assert found["pipeline_dir"] == str(target / "pixels_sql" / "sql")
    assert found["statements"] > len(PIPELINE_SCRIPTS)
    assert found["jar"] == str(target / "pixels_sql" / "jars" / "pixels-sql-extensions.jar")
    assert found["compiled"] is True
