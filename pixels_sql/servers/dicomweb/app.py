"""The DICOMweb service of ``pixels-sql serve``: an ASGI application over the catalog.

One module per resource family (qido.py, wado.py, stow.py); this module routes requests to
them, runs their blocking work off the event loop — views on the request threads, response
bodies on the stream threads, renders in the render pool's processes — and turns every failure
into a short message with the right status, never a stack trace. A 500 is a fault of ours: its
traceback goes to the server log under an id that the answer names. Limits: limits.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from pixels_sql.servers import viewer
from pixels_sql.servers.dicomweb import qido, rendered, wado
from pixels_sql.servers.dicomweb.connections import ConnectionGuard
from pixels_sql.servers.dicomweb.http import HTTPError, RenderJob, Request, Response
from pixels_sql.servers.dicomweb.index import CatalogIndex
from pixels_sql.servers.dicomweb.limits import HttpLimits
from pixels_sql.servers.dicomweb.query import QueryError, Resource
from pixels_sql.servers.dicomweb.render import PoolJob, RenderPool
from pixels_sql.servers.dicomweb.service import Service, ServiceOptions

if TYPE_CHECKING:
    pass

log = logging.getLogger("pixels_sql.dicomweb")

PREFIX = "/dicomweb"
STORE_OFF = "storing is off: start the server with pixels-sql serve --allow-store"
_UID = r"(?P<{}>[^/]+)"
_STUDY = "/studies/" + _UID.format("study")
_SERIES = _STUDY + "/series/" + _UID.format("series")
_INSTANCE = _SERIES + "/instances/" + _UID.format("instance")
_UID_GROUPS = ("study", "series", "instance")

Handler = Callable[..., Response | RenderJob | PoolJob]


def _routes() -> list[tuple[str, re.Pattern[str], Handler]]:
    from pixels_sql.servers.dicomweb import stow

    table: list[tuple[str, str, Handler]] = [
        ("GET", "/studies", qido.search_studies),
        ("GET", _STUDY + "/series", qido.search_series),
        ("GET", "/series", qido.search_series),
        ("GET", _SERIES + "/instances", qido.search_instances),
        ("GET", _STUDY + "/instances", qido.search_instances),
        ("GET", "/instances", qido.search_instances),
        ("GET", _STUDY, wado.retrieve),
        ("GET", _STUDY + "/metadata", wado.metadata),
        ("GET", _STUDY + "/thumbnail", rendered.thumbnail),
        ("GET", _STUDY + "/rendered", rendered.rendered_instances),
        ("GET", _SERIES, wado.retrieve),
        ("GET", _SERIES + "/metadata", wado.metadata),
        ("GET", _SERIES + "/thumbnail", rendered.thumbnail),
        ("GET", _SERIES + "/rendered", rendered.rendered_instances),
        ("GET", _INSTANCE, wado.retrieve),
        ("GET", _INSTANCE + "/metadata", wado.metadata),
        ("GET", _INSTANCE + "/frames/(?P<frame_list>[^/]+)", wado.frames),
        ("GET", _INSTANCE + "/frames/(?P<frame_list>[^/]+)/rendered", rendered.rendered_frames),
        ("GET", _INSTANCE + "/rendered", rendered.rendered),
        ("GET", _INSTANCE + "/thumbnail", rendered.thumbnail),
        ("GET", _INSTANCE + "/bulk/(?P<offset>[^/]+)/(?P<length>[^/]+)", wado.bulk),
        ("POST", "/studies", stow.store),
        ("POST", _STUDY, stow.store),
    ]
    return [(method, re.compile(pattern + "/?"), handler) for method, pattern, handler in table]


class Application:
    """The ASGI application: routes each request to its view with the shared :class:`Service`,
    on the request threads; streams bodies on the stream threads; renders in the render pool."""

    def __init__(self, index: CatalogIndex, options: ServiceOptions) -> None:
        self.service = Service(index, options)
        self.index = index
        self.options = options
        self.limits = options.limits
        self.routes = _routes()
        self.connections = ConnectionGuard(self.limits)
        self.renders = RenderPool(self.limits)
        self._requests = ThreadPoolExecutor(
            self.limits.request_threads, thread_name_prefix="dicomweb-request"
        )
        self._streams = ThreadPoolExecutor(
            self.limits.stream_threads, thread_name_prefix="dicomweb-stream"
        )

    def viewer_file(self, method: str, request_path: str) -> Response:
        """A file of the OHIF viewer (its generated app-config.js for that name)."""
        if method not in ("GET", "HEAD"):
            return _error(405, f"{method} is not allowed here")
        if self.options.viewer is None:
            headers = [("content-type", "text/html; charset=utf-8")]
            return Response(404, headers, viewer.NOT_INSTALLED.encode())
        if request_path.lstrip("/") == viewer.CONFIG_FILE:
            body = viewer.APP_CONFIG.encode()
            return Response(200, [("content-type", "text/javascript")], body)
        path = viewer.resolve(self.options.viewer, request_path)
        body = b"" if method == "HEAD" else path.read_bytes()
        return Response(200, [("content-type", viewer.media_type(path))], body)

    # -- routing -------------------------------------------------------------------------------

    def route(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = []
        for route_method, pattern, handler in self.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method == method or (method == "HEAD" and route_method == "GET"):
                return handler, {k: unquote(v) for k, v in match.groupdict().items()}
            allowed.append(route_method)
        if allowed:
            raise HTTPError(405, f"{method} is not allowed here (allowed: {', '.join(allowed)})")
        raise HTTPError(404, "no such DICOMweb resource")

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        client = scope.get("client")
        self.connections.request_started(client)
        try:
            await self._answer(scope, receive, send)
        finally:
            self.connections.request_ended(client)

    async def _run(self, pool: ThreadPoolExecutor, function: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, function, *args)

    async def _answer(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        request_path = scope["path"]
        # A request that may carry a body: until it is read (only a store reads it), the
        # connection cannot carry another request, and uvicorn would read the rest to discard.
        body_read = scope["method"] not in ("POST", "PUT", "PATCH", "DELETE")
        if not request_path.startswith(PREFIX + "/") and request_path != PREFIX:
            response = await self._run(
                self._requests, self.viewer_file, scope["method"], request_path
            )
            if not body_read:
                response.headers.append(("connection", "close"))
            await self._send(send, scope, response)
            return
        try:
            # Route and check before reading a body: a body the request cannot use (no such
            # resource, a method not allowed, storing off, too large) is never read.
            handler, params = self.route(scope["method"], request_path[len(PREFIX) :] or "/")
            body = b""
            if not body_read:
                body = await self._body(scope, receive)
                body_read = True
            request = _request(scope, body, self.limits)
            # The resource is made here, not in route(): a bad UID is answered after what is
            # wrong with the request itself (its body, its query) and before anything else.
            view = functools.partial(handler, self.service, request, **_view_arguments(params))
            result = await self._run(self._requests, view)
            if isinstance(result, RenderJob):
                response = await self.renders.render(result)
            elif isinstance(result, PoolJob):  # transcoding, in the render pool's workers
                response = await self.renders.answer(result)
            else:
                response = result
        except HTTPError as exc:
            response = _error(exc.status, exc.message, exc.headers)
        except QueryError as exc:
            response = _error(400, str(exc))
        except Exception:  # a fault of ours: the details to the log, an id to the client
            error_id = secrets.token_hex(6)
            log.exception(
                "DICOMweb request failed [error %s]: %s %s", error_id, scope["method"], request_path
            )
            response = _error(500, f"internal error {error_id}: the server log has its details")
        if not body_read:
            response.headers.append(("connection", "close"))
        if scope["method"] == "HEAD":
            response.body = b""
        await self._send(send, scope, response)

    async def _body(self, scope: dict[str, Any], receive: Callable) -> bytearray:
        """A request body, checked against max_body_bytes from its Content-Length before any
        of it is read (and while reading one sent in chunks), each piece awaited at most
        body_timeout seconds."""
        if not self.options.allow_store:
            raise HTTPError(403, STORE_OFF)
        limit = self.limits.max_body_bytes
        too_large = f"the request body is larger than {limit} bytes (max_body_bytes)"
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):  # h11 checks it first
                raise HTTPError(400, "Content-Length is not a number")
            if int(declared) > limit:
                raise HTTPError(413, too_large)
        body = bytearray()
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.limits.body_timeout)
            except TimeoutError:
                raise HTTPError(
                    408, f"no part of the request body came in {self.limits.body_timeout:g} s"
                ) from None
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "the client went before sending its whole body")
            body += message.get("body", b"")
            if len(body) > limit:
                raise HTTPError(413, too_large)
            if not message.get("more_body"):
                return body

    async def _send(self, send: Callable, scope: dict[str, Any], response: Response) -> None:
        """Send a response, its body a chunk at a time from the stream threads; a client that
        leaves a chunk unread for send_timeout seconds loses the connection."""
        timeout = self.limits.send_timeout

        async def deliver(message: dict[str, Any]) -> None:
            try:
                await asyncio.wait_for(send(message), timeout)
            except TimeoutError:
                self.connections.abort(scope.get("client"))
                raise _ClientGone from None

        try:
            await self._deliver_all(deliver, scope, response)
        except _ClientGone:
            # The connection is closed: let asyncio report it lost before this returns, so
            # that uvicorn sees a disconnected client, not an unfinished answer.
            await asyncio.sleep(0)

    async def _deliver_all(
        self, deliver: Callable, scope: dict[str, Any], response: Response
    ) -> None:
        await deliver(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers
                ],
            }
        )
        if isinstance(response.body, (bytes, bytearray)):
            await deliver({"type": "http.response.body", "body": bytes(response.body)})
            return
        chunks: Iterator[bytes] = iter(response.body)
        try:
            while True:
                try:
                    chunk = await self._run(self._streams, next, chunks, None)
                except Exception:  # the status is sent: all that is left is to cut the body short
                    log.exception(
                        "DICOMweb response body failed [error %s]: %s %s",
                        secrets.token_hex(6),
                        scope["method"],
                        scope["path"],
                    )
                    self.connections.abort(scope.get("client"))
                    raise _ClientGone from None
                if chunk is None:
                    break
                await deliver({"type": "http.response.body", "body": chunk, "more_body": True})
            await deliver({"type": "http.response.body", "body": b""})
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:  # a generator: its files are closed now, not by the GC
                await self._run(self._streams, close)

    def close(self) -> None:
        """Stop the pools (the server has stopped taking requests)."""
        self.connections.stop()
        self.renders.close()
        self._requests.shutdown(wait=False, cancel_futures=True)
        self._streams.shutdown(wait=False, cancel_futures=True)


class _ClientGone(Exception):
    """An answer cut short (the client stopped reading it for send_timeout seconds, or its
    body failed after the status was sent): the connection is closed."""


def _error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(
        status,
        [("content-type", "text/plain; charset=utf-8"), *(headers or [])],
        (message + "\n").encode(),
    )


def _view_arguments(params: dict[str, str]) -> dict[str, Any]:
    """A view's keyword arguments from its path's groups: the UIDs as one checked ``resource``
    (none for a path at the service's root), the others (frame_list, offset, length) as read."""
    arguments: dict[str, Any] = {k: v for k, v in params.items() if k not in _UID_GROUPS}
    uids = {k: v for k, v in params.items() if k in _UID_GROUPS}
    if uids:
        arguments["resource"] = Resource(**uids)
    return arguments


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _request(scope: dict[str, Any], body: bytes | bytearray, limits: HttpLimits) -> Request:
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
    }
    try:
        query = parse_qsl(
            scope.get("query_string", b"").decode("latin-1"),
            keep_blank_values=True,
            max_num_fields=limits.max_query_parameters,
        )
    except ValueError:  # more fields than max_num_fields
        raise QueryError(
            f"more than {limits.max_query_parameters} query parameters (max_query_parameters)"
        ) from None
    server_host, server_port = scope.get("server") or ("127.0.0.1", 80)
    host = headers.get("host") or f"{server_host}:{server_port}"
    if ":" not in host.rsplit("]", 1)[-1] and server_port not in (80, 443):
        # Some clients (dicomweb-client) send Host without the port: URLs in answers must
        # still reach this server.
        host = f"{host}:{server_port}"
    base_url = f"{scope.get('scheme', 'http')}://{host}{PREFIX}"
    return Request(
        method=scope["method"],
        path=scope["path"][len(PREFIX) :] or "/",
        query=query,
        headers=headers,
        base_url=base_url,
        body=body,
    )


async def _lifespan(receive: Callable, send: Callable) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
