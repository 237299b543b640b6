"""Fault injection for tests/test_hardening.py, loaded by every Python process of a run.

Put this folder on PYTHONPATH and set PIXELS_SQL_TEST_INJECT=1: then reading a file whose name
starts with ``inject-meta-abort`` aborts the process (as a C++ decoder's uncaught exception
does), ``inject-meta-raise`` raises an unexpected exception, and ``inject-thumb-abort`` /
``inject-thumb-raise`` do the same while rendering its thumbnail.
"""

from __future__ import annotations

import os

if os.environ.get("PIXELS_SQL_TEST_INJECT") == "1":
    from pixels_sql.dicom import meta, thumbnail

    def _injected(original, prefix):  # type: ignore[no-untyped-def]
        def run(source, *args):  # type: ignore[no-untyped-def]
            # The readers take an opened source (io/sources.py), whose name is the path, or
            # (meta.read_json_compiled and meta.read_typed_compiled, the compiled one-call
            # paths) the local path itself.
            name = os.path.basename(source if isinstance(source, str) else source.name)
            if name.startswith(f"inject-{prefix}-abort"):
                os.abort()
            if name.startswith(f"inject-{prefix}-raise"):
                raise LookupError(f"injected failure for {name}")
            return original(source, *args)

        return run

    meta._read_meta = _injected(meta._read_meta, "meta")
    meta.read_json_compiled = _injected(meta.read_json_compiled, "meta")
    meta.read_typed_compiled = _injected(meta.read_typed_compiled, "meta")
    thumbnail._render = _injected(thumbnail._render, "thumb")
