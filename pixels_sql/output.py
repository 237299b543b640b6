"""Readable terminal output for query results: aligned tables, CSV or JSON lines."""

from __future__ import annotations

import csv
import datetime
import io
import json
from collections.abc import Sequence
from typing import Any

FORMATS = ("table", "csv", "json")


def cell_text(value: Any, width: int | None) -> str:
    if value is None:
        text = "NULL"
    elif isinstance(value, (bytes, bytearray)):
        text = f"<{len(value)} bytes>"
    elif isinstance(value, (list, tuple)):
        text = json.dumps([_jsonable(item) for item in value], ensure_ascii=False)
    elif isinstance(value, dict):
        text = json.dumps({str(k): _jsonable(v) for k, v in value.items()}, ensure_ascii=False)
    elif hasattr(value, "toJson"):  # VariantVal
        text = value.toJson()
    else:
        text = str(value)
    text = text.replace("\n", " ")
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if hasattr(value, "asDict"):
        return {k: _jsonable(v) for k, v in value.asDict().items()}
    if hasattr(value, "toJson"):
        return json.loads(value.toJson())
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def render(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table", width: int = 60
) -> str:
    """Rows as an aligned text table (cells cut at ``width``), CSV, or JSON lines."""
    if fmt == "json":
        return "\n".join(
            json.dumps(
                {c: _jsonable(v) for c, v in zip(columns, row, strict=True)}, ensure_ascii=False
            )
            for row in rows
        )
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([cell_text(v, None) if v is not None else "" for v in row])
        return buffer.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    cells = [[cell_text(v, width) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [
        " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
        line.replace("+", "+"),
    ]
    out += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(out)
