"""What the DICOMweb views share: the catalog index, the options, and the checks every read
of a catalogued file goes through (views: qido.py, wado.py, stow.py; the ASGI application that
routes to them: app.py)."""

from __future__ import annotations

import copy
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from pixels_sql.dicom.bulk import bulk_range
from pixels_sql.dicom.meta import read_model
from pixels_sql.errors import DicomReadError
from pixels_sql.io import archives
from pixels_sql.io.paths import to_local_path
from pixels_sql.servers.dicomweb.http import HTTPError
from pixels_sql.servers.dicomweb.index import CatalogIndex, Instance
from pixels_sql.servers.dicomweb.limits import DEFAULT_LIMITS, HttpLimits
from pixels_sql.servers.dicomweb.query import Resource, Search

if TYPE_CHECKING:
    from pathlib import Path

    from pixels_sql.servers.intake import Intake

log = logging.getLogger("pixels_sql.dicomweb")


@dataclass
class ServiceOptions:
    # Where STOW-RS hands the instances it is sent (servers/intake.py); None: storing is off.
    intake: Intake | None = None
    viewer: Path | None = None  # the OHIF build served at / (viewer.py), None: not installed
    limits: HttpLimits = field(default_factory=lambda: DEFAULT_LIMITS)

    @property
    def allow_store(self) -> bool:
        return self.intake is not None


class Service:
    """What the views share: the index, the options, and the checks every read goes through."""

    def __init__(self, index: CatalogIndex, options: ServiceOptions) -> None:
        self.index = index
        self.options = options
        self.limits = options.limits
        # Half the budget each: headers as read, and the JSON of their public form.
        self._headers = ByteBoundedCache(options.limits.header_cache_bytes // 2)
        self._public = ByteBoundedCache(options.limits.header_cache_bytes // 2)

    # -- the catalogued files ---------------------------------------------------------------

    def catalogued(self, resource: Resource) -> list[Instance]:
        """The catalogued instances of ``resource``, in series order; 404 if there are none."""
        found = self.index.instances(resource.study, resource.series, resource.instance)
        if not found:
            raise HTTPError(404, f"no such {resource.level.value} in the catalog")
        return found

    def check_fresh(self, item: Instance) -> None:
        """Refuse a file that changed (or went) since it was catalogued: serve only what the
        catalog describes."""
        disk = to_local_path(archives.outermost(item.path))
        try:
            status = os.stat(disk)
        except OSError:
            raise HTTPError(404, f"the file of instance {item.sop_uid} is gone") from None
        changed = abs(status.st_mtime_ns // 1_000_000 - item.modified_ms) > 1000
        if not archives.is_member_path(item.path):
            changed = changed or status.st_size != item.length
        if changed:
            raise HTTPError(
                404,
                f"the file of instance {item.sop_uid} changed since it was catalogued:"
                " ingest again",
            )

    def header(self, item: Instance) -> dict[str, Any]:
        """The instance's DICOM JSON (dicom_meta's reader), from the cache while the file is
        the one catalogued. Shared: callers read it, never change it."""
        self.check_fresh(item)
        return self._model(item)

    def _model(self, item: Instance) -> dict[str, Any]:
        """:meth:`header` of a file already checked fresh."""
        key = (item.path, item.length, item.modified_ms)
        cached = self._headers.get(key)
        if cached is not None:
            return cached
        try:
            model = read_model(item.path)
        except DicomReadError as exc:
            raise HTTPError(404, f"instance {item.sop_uid}: {exc.reason}") from None
        self._headers.put(key, model, len(orjson.dumps(model)))
        return model

    def public_header(self, item: Instance, base: str) -> dict[str, Any]:
        """The header with its BulkDataURIs made URLs of this service."""
        return _with_public_bulk(self.header(item), _instance_url(item, base))

    def public_header_json(self, item: Instance, base: str) -> bytes:
        """:meth:`public_header` as JSON text, from the cache while the file is the one
        catalogued (a series' metadata is asked for again and again by viewers)."""
        self.check_fresh(item)
        key = (item.path, item.length, item.modified_ms, base)
        cached = self._public.get(key)
        if cached is None:
            cached = orjson.dumps(_with_public_bulk(self._model(item), _instance_url(item, base)))
            self._public.put(key, cached, len(cached))
        return cached

    def include_fields(
        self,
        search: Search,
        results: list[dict[str, Any]],
        keys: list[tuple[str, str | None, str | None]],
        base: str,
    ) -> None:
        """Add the ``includefield`` attributes the index does not hold, from the header of
        each result's first instance."""
        if not search.include_tags:
            return
        for result, (study, series, instance) in zip(results, keys, strict=True):
            missing = [tag for tag in search.include_tags if tag not in result]
            if not missing:
                continue
            first = self.index.instances(study, series, instance)[:1]
            if not first:
                continue
            try:
                header = self.public_header(first[0], base)
            except HTTPError:
                continue
            for tag in missing:
                if tag in header:
                    result[tag] = header[tag]


def _instance_url(item: Instance, base: str) -> str:
    return f"{base}/studies/{item.study_uid}/series/{item.series_uid}/instances/{item.sop_uid}"


class ByteBoundedCache:
    """A least-recently-used cache holding at most ``max_bytes`` of values (each value's size
    told by the caller); one larger than that is not kept. Thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: Hashable, value: Any, size: int) -> None:
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped


def _with_public_bulk(header: dict[str, Any], instance_url: str) -> dict[str, Any]:
    result = copy.deepcopy(header)

    def rewrite(elements: dict[str, Any]) -> None:
        for element in elements.values():
            uri = element.get("BulkDataURI")
            if uri is not None:
                byte_range = bulk_range(uri)
                if byte_range is not None:
                    element["BulkDataURI"] = f"{instance_url}/bulk/{byte_range[0]}/{byte_range[1]}"
                else:  # a deflated file: the value has no byte range
                    element["BulkDataURI"] = instance_url
            for item in element.get("Value", []) if element.get("vr") == "SQ" else []:
                rewrite(item)

    rewrite(result)
    return result
