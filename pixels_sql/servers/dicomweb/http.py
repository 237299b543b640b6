"""The small HTTP vocabulary of the DICOMweb views: requests, responses, errors, media types,
and multipart/related bodies (RFC 2387, as PS3.18 8.6.1.2 uses them)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


class HTTPError(Exception):
    """An error answer: status and a short text (never a stack trace)."""

    def __init__(
        self, status: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


@dataclass
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]  # lower-case names
    base_url: str  # scheme://host[:port] + the service prefix, for URLs in answers
    body: bytes | bytearray = b""


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | Iterable[bytes] = b""


@dataclass
class RenderJob:
    """What a rendering view answers: the render pool (render.py) renders the candidates'
    files in order and sends the first image made, so that no request thread waits for it."""

    candidates: list[tuple[str, str]]  # (SOP Instance UID, path)
    size: int
    fmt: str  # png or jpeg
    media_type: str


def warning_headers(warnings: Iterable[str]) -> list[tuple[str, str]]:
    """PS3.18 8.4.2: a Warning header (code 299) for each thing the service ignored."""
    return [("warning", f'299 pixels-sql "{text}"') for text in warnings]


def json_response(value: Any, status: int = 200, warnings: Iterable[str] = ()) -> Response:
    headers = [("content-type", "application/dicom+json"), *warning_headers(warnings)]
    return Response(status, headers, json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header: type/subtype and its parameters (lower-case names)."""

    media_type: str
    params: dict[str, str]

    @property
    def quality(self) -> float:
        try:
            return float(self.params.get("q", "1"))
        except ValueError:
            return 0.0


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts, current, quoted = [], [], False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, best first, those of quality 0 left out; ``*/*``
    when there is none."""
    if not header:
        return [MediaRange("*/*", {})]
    ranges = []
    for entry in _split_outside_quotes(header, ","):
        pieces = _split_outside_quotes(entry.strip(), ";")
        media_type = pieces[0].strip().lower()
        if not media_type:
            continue
        params = {}
        for piece in pieces[1:]:
            name, _, value = piece.strip().partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        media_range = MediaRange(media_type, params)
        if media_range.quality > 0:  # q=0: "not acceptable" (RFC 9110 12.4.2)
            ranges.append(media_range)
    return sorted(ranges, key=lambda r: -r.quality)


def multipart(parts: Iterable[tuple[str, Iterable[bytes]]], boundary: str) -> Iterator[bytes]:
    """A multipart/related body from (content type, content chunks) parts, streamed."""
    for content_type, chunks in parts:
        yield f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
        yield from chunks
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def multipart_response(
    parts: Iterable[tuple[str, Iterable[bytes]]], part_type: str, extra: str = ""
) -> Response:
    boundary = secrets.token_hex(16)
    content_type = f'multipart/related; type="{part_type}"; boundary={boundary}{extra}'
    return Response(200, [("content-type", content_type)], multipart(parts, boundary))


def parse_multipart(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related body: (headers with lower-case names, content)."""
    params = {}
    for piece in _split_outside_quotes(content_type, ";")[1:]:
        name, _, value = piece.strip().partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    boundary = params.get("boundary")
    if not boundary:
        raise HTTPError(400, "the multipart body has no boundary parameter")
    delimiter = b"--" + boundary.encode("latin-1")
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, separator, content = chunk.partition(b"\r\n\r\n")
        if not separator:
            raise HTTPError(400, "a multipart part has no header/body separator")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, content))
    return parts
