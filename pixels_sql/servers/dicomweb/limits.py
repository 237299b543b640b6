"""The limits of the DICOMweb service's HTTP server: one place for their names, defaults and
meaning (docs/server.md, "Limits", lists them from here).

A limit keeps one client from taking what the others need — memory, file descriptors, worker
threads, CPU — and a request beyond one gets a 4xx (or the connection is closed, for the
connection limits), never a 500. Change them with ``pixels-sql serve --http-limit NAME=VALUE``
(repeatable) or, embedding the service, ``ServiceOptions(limits=HttpLimits(...))``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

MIB = 1024**2
GIB = 1024**3


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class HttpLimits:
    # -- connections (enforced when a connection is accepted; see connections.py) ---------------
    # Open connections in all. At the cap a new connection takes the place of the oldest one that
    # has no request in progress (a half-open or idle one); if every one is busy, it is closed.
    max_connections: int = 1024
    # Open connections from one client address; the same rule at this cap, among that address's
    # connections. A reverse proxy is one address: raise it behind one.
    max_connections_per_client: int = 64
    # Seconds a connection may take to send a complete request head (line and headers), from
    # its opening or from the end of its previous response; then it is closed.
    header_timeout: float = 10.0
    # Seconds the server waits for the next piece of a request body (408 after).
    body_timeout: float = 30.0
    # Seconds a client may leave a piece of a response unread before the connection is closed.
    send_timeout: float = 60.0
    # Bytes of a request head (line and headers); h11's limit, a 400 past it.
    max_head_bytes: int = 16 * 1024
    # -- bodies ------------------------------------------------------------------------------
    # Bytes of a STOW-RS body: from Content-Length before anything is read, counted while
    # reading one sent in chunks (413 either way).
    max_body_bytes: int = 1 * GIB
    # -- parameters (400 past them) ----------------------------------------------------------
    # Query parameters of one request.
    max_query_parameters: int = 64
    # Values of one list (UIDs, modalities, includefield attributes).
    max_list_values: int = 1000
    # Characters of one matching value.
    max_value_chars: int = 256
    # QIDO-RS offset (limit is capped at max_results instead).
    max_offset: int = 1_000_000_000
    # Results of one QIDO-RS search: a larger limit (or none) is capped at this.
    max_results: int = 10_000
    # -- WADO-RS -----------------------------------------------------------------------------
    # Frame numbers in one frames request, and the bytes they add up to (repeats counted).
    max_frames: int = 1000
    max_frames_bytes: int = 1 * GIB
    # Bytes of instance headers (their DICOM JSON) kept in memory between requests: metadata
    # and frames requests read the headers of the same instances again and again.
    header_cache_bytes: int = 64 * MIB
    # Images of one rendered study, series or frames request (each rendered in turn).
    max_rendered_images: int = 1000
    # Rendering (rendered, thumbnail) runs in worker processes of its own, so that searches never
    # wait behind it: how many, and how many renders may wait for one (503 beyond).
    render_workers: int = max(1, _cpus() // 2)
    render_queue: int = 16
    # Seconds one render (or one transcoding) may take; then its worker is replaced and the
    # answer is a 404 ("cannot be rendered: timeout"), as for a file no decoder reads (a 406 for
    # a transcoding).
    render_timeout: float = 120.0
    # Bytes of address space one worker may take (RLIMIT_AS; about 220 MiB of it is the
    # interpreter with numpy, pydicom, Pillow and the codecs): a decode needing more fails alone.
    worker_memory: int = 4 * GIB
    # Bytes of decoded pixel data one instance or frames request is transcoded from and to
    # (a transcoding holds a few copies of it): beyond, a 400 says to ask for transfer-syntax=*
    # (the stored bytes, streamed) or for fewer frames.
    max_transcode_bytes: int = 512 * MIB
    # Threads that run the other views (searches, metadata, lookups), and those that read files
    # for response bodies (retrieve, frames, bulk data).
    request_threads: int = 8
    stream_threads: int = 8

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            if getattr(self, item.name) <= 0:
                raise ValueError(f"the HTTP limit {item.name} must be positive")

    def with_settings(self, settings: list[str]) -> HttpLimits:
        """These limits with ``NAME=VALUE`` settings applied (``--http-limit``); ValueError
        naming the setting if one is unknown or not a positive number."""
        types = {item.name: item.type for item in dataclasses.fields(self)}
        changes: dict[str, int | float] = {}
        for setting in settings:
            name, equals, text = setting.partition("=")
            name = name.strip().replace("-", "_")
            if not equals or name not in types:
                known = ", ".join(sorted(types))
                raise ValueError(
                    f"--http-limit {setting!r}: expected NAME=VALUE, NAME one of {known}"
                )
            try:
                value: int | float = float(text) if types[name] == "float" else int(text)
            except ValueError:
                raise ValueError(f"--http-limit {setting!r}: {text!r} is not a number") from None
            if value <= 0:
                raise ValueError(f"--http-limit {setting!r}: the value must be positive")
            changes[name] = value
        return dataclasses.replace(self, **changes)


DEFAULT_LIMITS = HttpLimits()
