"""The gallery page: grouping, captions, escaping (the browser test is in test_cli.py)."""

from __future__ import annotations

import re

from pixels_sql.dicom.thumbnail import render_thumbnail
from pixels_sql.gallery import render_gallery
from tests.corpus import PYDICOM_TEST_FILES

PNG = render_thumbnail(str(PYDICOM_TEST_FILES / "CT_small.dcm"), 32)


def row(study: str, series: str, number: int, **extra: object) -> dict[str, object]:
    return {
        "StudyInstanceUID": study,
        "SeriesInstanceUID": series,
        "SOPInstanceUID": f"{series}.{number}",
        "InstanceNumber": number,
        "Modality": "CT",
        "Rows": 128,
        "Columns": 128,
        "length": 39000,
        "relative_path": f"{series}/{number}.dcm",
        "thumbnail": PNG,
        **extra,
    }


def test_grouped_by_study_then_series_one_figure_per_instance() -> None:
    page = render_gallery(
        [
            row("1", "1.1", 1, StudyDescription="Head", SeriesDescription="Axial"),
            row("1", "1.1", 2),
            row("1", "1.2", 1),
            row("2", "2.1", 1, StudyDescription="Chest"),
        ]
    )
    assert page.count("<section class=study>") == 2
    assert page.count("<h3>") == 3
    assert page.count("<figure") == 4
    assert re.search(r"<h2>Head</h2>.*<h3>CT · Axial · 2 images</h3>", page, re.S)
    assert "CT · #1 · 128x128 · 38.1 KB" in page
    assert page.count("data:image/png;base64,") == 4


def test_text_from_files_is_escaped() -> None:
    page = render_gallery([row("1", "1.1", 1, StudyDescription="<script>alert(1)</script>")])
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
