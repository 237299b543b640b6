"""A static HTML contact sheet of thumbnails, grouped by study and series (no server needed)."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping
from itertools import groupby
from typing import Any

from pixels_sql.servers.viewer import study_url

# Columns the gallery query returns (see GALLERY_SQL); each row is one instance.
GALLERY_SQL = """
SELECT
  c.StudyInstanceUID, c.StudyDate, c.StudyDescription, c.PatientID,
  c.SeriesInstanceUID, c.SeriesNumber, c.SeriesDescription, c.Modality,
  c.SOPInstanceUID, c.InstanceNumber, c.`Rows`, c.`Columns`, c.NumberOfFrames, c.length,
  c.relative_path, t.thumbnail
FROM {database}.object_catalog AS c
JOIN {database}.object_thumbnails AS t ON t.path = c.path
WHERE t.thumbnail IS NOT NULL AND c.deleted_at IS NULL AND t.deleted_at IS NULL
ORDER BY c.StudyDate, c.StudyInstanceUID, c.SeriesNumber, c.SeriesInstanceUID,
         c.InstanceNumber, c.relative_path
LIMIT {limit}
"""

_STYLE = """
body { font: 13px/1.4 system-ui, sans-serif; margin: 1.5em; background: #111; color: #ddd; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin: 1.6em 0 .3em; color: #fff; }
h3 { font-size: 13px; margin: .8em 0 .3em; color: #9cf; font-weight: 600; }
.sheet { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; width: 180px; background: #1c1c1c; padding: 6px; border-radius: 4px; }
figure img { display: block; max-width: 168px; max-height: 168px; margin: 0 auto;
             image-rendering: auto; background: #000; }
figcaption { font-size: 11px; color: #aaa; margin-top: 4px; word-break: break-all; }
.meta { color: #888; } a.viewer { color: #9cf; font-size: 13px; font-weight: normal; }
"""

# Counts images that decoded and those that did not, for people and for the browser test.
_CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.querySelectorAll('figure img'));
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-ok', String(ok));
  document.body.setAttribute('data-images-broken', String(images.length - ok));
});
"""


def _text(value: Any, fallback: str = "") -> str:
    return html.escape(fallback if value is None else str(value))


def _joined(*parts: str) -> str:
    """The non-empty parts, separated by a middle dot."""
    return " · ".join(part for part in parts if part)


def _size(length: Any) -> str:
    if length is None:
        return ""
    value = float(length)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""


def _figure(row: Mapping[str, Any]) -> str:
    data = base64.b64encode(bytes(row["thumbnail"])).decode("ascii")
    dimensions = f"{row.get('Columns')}x{row.get('Rows')}" if row.get("Rows") else ""
    frames = row.get("NumberOfFrames")
    if frames and int(frames) > 1:
        dimensions += f" x {frames} frames"
    caption = _joined(
        _text(row.get("Modality")),
        f"#{_text(row.get('InstanceNumber'))}" if row.get("InstanceNumber") is not None else "",
        _text(dimensions),
        _text(_size(row.get("length"))),
    )
    return (
        f'<figure data-sop="{_text(row.get("SOPInstanceUID"))}">'
        f'<img src="data:image/png;base64,{data}" alt="{_text(row.get("relative_path"))}"'
        f' loading="eager">'
        f"<figcaption>{caption}<br><span class=meta>{_text(row.get('relative_path'))}</span>"
        "</figcaption></figure>"
    )


def render_gallery(
    rows: Iterable[Mapping[str, Any]],
    title: str = "pixels-sql gallery",
    viewer_base: str | None = None,
) -> str:
    """The HTML page: one section per study, one contact sheet per series, one image each;
    with ``viewer_base`` (a pixels-sql serve's address), each study links to the viewer."""
    rows = list(rows)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_text(title)}</title><style>{_STYLE}</style>",
        f"<script>{_CHECK_SCRIPT}</script></head><body>",
        f"<h1>{_text(title)}</h1>",
        f"<p class=meta>{len(rows)} images</p>",
    ]

    def study_key(row: Mapping[str, Any]) -> Any:
        return row.get("StudyInstanceUID")

    def series_key(row: Mapping[str, Any]) -> Any:
        return row.get("SeriesInstanceUID")

    for _study, study_rows in groupby(rows, key=study_key):
        study_rows = list(study_rows)
        first = study_rows[0]
        heading = _joined(
            _text(first.get("StudyDate")),
            _text(first.get("StudyDescription"), "(no study description)"),
            f"patient {_text(first.get('PatientID'))}" if first.get("PatientID") else "",
        )
        if viewer_base and first.get("StudyInstanceUID"):
            url = study_url(viewer_base, str(first["StudyInstanceUID"]))
            heading += f' · <a class=viewer href="{_text(url)}">open in the viewer</a>'
        parts.append(f"<section class=study><h2>{heading}</h2>")
        for _series, series_rows in groupby(study_rows, key=series_key):
            series_rows = list(series_rows)
            lead = series_rows[0]
            series_heading = _joined(
                _text(lead.get("Modality")),
                f"series {_text(lead.get('SeriesNumber'))}"
                if lead.get("SeriesNumber") is not None
                else "",
                _text(lead.get("SeriesDescription"), "(no series description)"),
                f"{len(series_rows)} images",
            )
            parts.append(f"<h3>{series_heading}</h3><div class=sheet>")
            parts.extend(_figure(row) for row in series_rows)
            parts.append("</div>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
