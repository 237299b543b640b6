"""``python -m pixels_sql.dicom.attributes --write | --check``: the generated regions of the
checked-in files (pixels_sql/dicom/attributes/generate.py)."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from pixels_sql.dicom.attributes.generate import ROOT, RegionError, differing, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pixels_sql.dicom.attributes",
        description="Rewrite or check the regions generated from the attribute registry.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the regions that differ")
    action.add_argument(
        "--check", action="store_true", help="exit 1 listing the files whose regions differ"
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout (default: this one)")
    args = parser.parse_args(argv)
    if not (args.root / "sql").is_dir():
        # An installed package has no checked-in files to generate.
        print(
            f"pixels_sql.dicom.attributes: {args.root} is not a pixels-sql checkout (no sql/);"
            " pass --root",
            file=sys.stderr,
        )
        return 2
    try:
        if args.write:
            for path in write(args.root):
                print(f"rewrote {path}")
            return 0
        changed = differing(args.root)
    except (RegionError, OSError) as error:
        print(f"pixels_sql.dicom.attributes: {error}", file=sys.stderr)
        return 2
    for path, wanted in changed.items():
        current = (args.root / path).read_text()
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            f"{path} (checked in)",
            f"{path} (generated)",
        )
        sys.stdout.writelines(diff)
    if changed:
        print(
            f"{len(changed)} file(s) differ from the attribute registry: {', '.join(changed)};"
            " run python -m pixels_sql.dicom.attributes --write",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
