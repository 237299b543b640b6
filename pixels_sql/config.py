"""Every setting pixels-sql reads from the environment, in one place.

Settings come from environment variables rather than Spark settings so that they reach Spark's
Python workers and the helper process they fork (on a cluster set them with
``spark.executorEnv.<NAME>``). They are read when used, never at import time: a test, a
notebook or a long-running server that changes one sees the new value on the next read.

``settings.file_timeout`` reads ``PIXELS_SQL_FILE_TIMEOUT`` now and returns its parsed value (or
the default); a value that does not parse raises :class:`SettingError` naming the variable.
:data:`SETTINGS` is the registry: docs/cli.md's environment table is generated from it
(``python -m pixels_sql.config --check``, run by tests/test_layout.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_MB = 1 << 20

# The database the pipeline fills and the commands read when none is named.
DEFAULT_DATABASE = "pixels"
# The database `pixels-sql demo` (`make demo`) fills: the sample files stay apart from yours.
DEMO_DATABASE = "pixels_demo"


class SettingError(ValueError):
    """An environment variable holds a value its setting cannot use."""


@dataclass(frozen=True)
class Setting:
    variable: str
    default: Any
    parse: Callable[[str], Any]
    doc: str
    shown_default: str = ""  # how the docs table shows the default, when not the value itself

    def read(self) -> Any:
        text = os.environ.get(self.variable, "").strip()
        if not text:
            return self.default
        try:
            return self.parse(text)
        except ValueError as exc:
            raise SettingError(f"{self.variable}={text!r}: {exc}") from None


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("a number of seconds cannot be negative")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("cannot be negative")
    return value


def _mebibytes(text: str) -> int:
    return _count(text) * _MB


def _ratio(text: str) -> float:
    value = float(text)
    if value <= 1:
        raise ValueError("a compression ratio must be greater than 1")
    return value


def _isolation(text: str) -> str:
    if text not in ("process", "none"):
        raise ValueError("must be one of process, none")
    return text


def _switch(text: str) -> bool:
    if text not in ("on", "off"):
        raise ValueError("must be on or off")
    return text == "on"


def _path(text: str) -> Path:
    return Path(text).expanduser()


def _text(text: str) -> str:
    return text


def _path_or_off(text: str) -> Path | bool:
    return False if text == "off" else _path(text)


SETTINGS: dict[str, Setting] = {
    "home": Setting(
        "PIXELS_SQL_HOME",
        None,
        _path,
        "default home folder (metastore, warehouse, scratch space)",
        "the nearest `pixels-home` holding a home, from the working folder up (like git);"
        " else `./pixels-home`",
    ),
    "jar": Setting(
        "PIXELS_SQL_JAR",
        None,
        _path,
        "the extension jar to use instead of `jars/pixels-sql-extensions.jar`",
    ),
    "writer_wait": Setting(
        "PIXELS_SQL_WRITER_WAIT",
        600.0,
        _seconds,
        "seconds a command waits for another process writing the same home's catalog",
    ),
    "isolation": Setting(
        "PIXELS_SQL_ISOLATION",
        "process",
        _isolation,
        "`process`: the SQL functions read files in a helper process, so a native crash costs"
        " one file; `none`: in the Python worker itself",
    ),
    "file_timeout": Setting(
        "PIXELS_SQL_FILE_TIMEOUT",
        300.0,
        _seconds,
        "seconds one file may take before it fails with `timeout`",
    ),
    "file_memory": Setting(
        "PIXELS_SQL_FILE_MEMORY",
        0,
        _mebibytes,
        "an address-space limit for the helper process in MiB (0: none; the thumbnail pixel"
        " budget already bounds decoding)",
        "`0`",
    ),
    "zip_max_ratio": Setting(
        "PIXELS_SQL_ZIP_MAX_RATIO",
        100.0,
        _ratio,
        "a zip member over 1 MiB that inflates more than this many times its compressed size"
        " is a `zip_bomb`",
    ),
    "zip_max_member_bytes": Setting(
        "PIXELS_SQL_ZIP_MAX_MEMBER_MB",
        4096 * _MB,
        _mebibytes,
        "a member larger than this many MiB is `too_large`",
        "`4096`",
    ),
    "zip_max_total_bytes": Setting(
        "PIXELS_SQL_ZIP_MAX_TOTAL_MB",
        65536 * _MB,
        _mebibytes,
        "members past this running total (MiB) of an archive's content are `too_large`",
        "`65536`",
    ),
    "zip_max_depth": Setting(
        "PIXELS_SQL_ZIP_MAX_DEPTH",
        2,
        _count,
        "archives nested deeper than this are `too_deep` (2: a zip inside a zip)",
    ),
    "zip_max_members": Setting(
        "PIXELS_SQL_ZIP_MAX_MEMBERS",
        100_000,
        _count,
        "an archive listing more members is `too_large` as a whole",
    ),
    "viewer_dir": Setting(
        "PIXELS_SQL_VIEWER_DIR",
        None,
        _path,
        "the OHIF build `serve` serves (default: `build/viewer/ohif-<version>`, made by"
        " `make viewer`)",
    ),
    "viewer_url": Setting(
        "PIXELS_SQL_VIEWER_URL",
        None,
        lambda text: text.rstrip("/"),
        "where gallery links open studies (default: the `serve` running on the home)",
    ),
    "engine": Setting(
        "PIXELS_SQL_ENGINE",
        True,
        _switch,
        "`on`: `sql`, `run`, `ingest` and `gallery` run in the home's warm engine, started when"
        " none runs (docs/cli.md); `off`: each command starts its own Spark, as `--no-server`",
        "`on`",
    ),
    "idle_timeout": Setting(
        "PIXELS_SQL_IDLE_TIMEOUT",
        300.0,
        _seconds,
        "seconds a warm engine started by a command waits for the next one before it stops",
        "`300`",
    ),
    "deid_key_file": Setting(
        "PIXELS_SQL_DEID_KEY_FILE",
        None,
        _path,
        "a file holding the de-identification key (at least 16 bytes): new UIDs, pseudonyms"
        " and date shifts are keyed hashes of it (docs/deidentification.md)",
    ),
    "deid_key": Setting(
        "PIXELS_SQL_DEID_KEY",
        None,
        _text,
        "the de-identification key itself, when no key file is named",
    ),
    "deid_pixel_rules": Setting(
        "PIXELS_SQL_DEID_PIXEL_RULES",
        None,
        _path,
        "a TOML file of Clean Pixel Data rules: rectangles blacked out in the images each rule"
        " matches (docs/deidentification.md)",
        "`pixels_sql/deid/data/pixel-rules.toml` (25 layouts from CTP's library)",
    ),
    "deid_tesseract": Setting(
        "PIXELS_SQL_TESSERACT",
        "tesseract",
        _text,
        "the Tesseract command that finds burned-in text (option `ocr`, dicom_burned_in_text)",
    ),
    "class_archive": Setting(
        "PIXELS_SQL_CLASS_ARCHIVE",
        None,
        _path_or_off,
        "the folder of the driver JVM's class archive (written once by the first `serve` or"
        " engine, then mapped by every driver JVM: a faster start; pixels_sql/jvm_classes.py);"
        " `off`: none",
        "`$XDG_CACHE_HOME/pixels-sql/jvm-classes` (`~/.cache/...`)",
    ),
    "driver_memory": Setting(
        "SPARK_DRIVER_MEMORY",
        "2g",
        _text,
        "Spark's own variable: the local driver's heap (pixels-sql's default 2g, Spark's 1g)",
    ),
}


class Settings:
    """Attribute access to :data:`SETTINGS`, read from the environment at each access."""

    def __getattr__(self, name: str) -> Any:
        try:
            setting = SETTINGS[name]
        except KeyError:
            raise AttributeError(f"no pixels-sql setting {name!r}") from None
        return setting.read()

    def variable(self, name: str) -> str:
        """The environment variable of setting ``name`` (for messages)."""
        return SETTINGS[name].variable


settings = Settings()


def _shown_default(setting: Setting) -> str:
    if setting.shown_default:
        return setting.shown_default
    if setting.default is None:
        return "unset"
    value = setting.default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def environment_table() -> str:
    """The Markdown table of docs/cli.md's "Environment" section."""
    lines = ["| variable | default | |", "|---|---|---|"]
    for setting in SETTINGS.values():
        lines.append(f"| `{setting.variable}` | {_shown_default(setting)} | {setting.doc} |")
    return "\n".join(lines) + "\n"


BEGIN = "<!-- BEGIN generated by pixels_sql.config -->\n"
END = "<!-- END generated by pixels_sql.config -->\n"
DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def generated_doc(text: str) -> str:
    """``text`` (docs/cli.md) with its generated region made anew."""
    start = text.index(BEGIN) + len(BEGIN)
    return text[:start] + environment_table() + text[text.index(END) :]


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    wanted = generated_doc(text)
    if argv == ["--write"]:
        DOC.write_text(wanted)
        return 0
    if argv == ["--check"]:
        if wanted != text:
            print(f"{DOC}: the environment table differs from pixels_sql.config.SETTINGS")
            print("run: python -m pixels_sql.config --write")
            return 1
        return 0
    print("usage: python -m pixels_sql.config --check | --write", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
