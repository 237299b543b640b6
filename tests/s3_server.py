"""A real S3-compatible server on loopback for the tests and benchmarks: moto's server, with a
recorder in front that logs every request (method, key, Range header, status, body bytes sent)
and can answer some requests ``503 Slow Down``, as S3 does when throttling.

``python -m tests.s3_server --port N`` serves until killed; it prints ``ready <url>`` once it
accepts connections. Control requests go to ``/_recorder/...`` (an invalid bucket name, so no S3
request can collide with them):

- ``GET /_recorder/log``: the recorded requests, as JSON;
- ``POST /_recorder/reset``: forget them (and stop throttling);
- ``POST /_recorder/throttle?every=N``: answer every N-th S3 request with 503 (0: never).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs
from urllib.request import Request, urlopen

CONTROL = "/_recorder/"
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
# The variables a client needs to reach the server (credentials moto accepts).
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "pixels-test",
    "AWS_SECRET_ACCESS_KEY": "pixels-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class Recorder:
    """WSGI middleware: records each request, throttles on demand."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.log: list[dict[str, Any]] = []
        self.throttle_every = 0
        self.count = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL):
            return self.control(path[len(CONTROL) :], environ, start_response)
        with self.lock:
            self.count += 1
            throttled = self.throttle_every > 0 and self.count % self.throttle_every == 0
            record: dict[str, Any] = {
                "method": environ.get("REQUEST_METHOD"),
                "path": path,
                "query": environ.get("QUERY_STRING", ""),
                "range": environ.get("HTTP_RANGE"),
                "status": None,
                "bytes": 0,
            }
            self.log.append(record)
        if throttled:
            record["status"] = 503
            start_response(
                "503 Slow Down",
                [("Content-Type", "application/xml"), ("Content-Length", str(len(SLOW_DOWN)))],
            )
            return [SLOW_DOWN]

        def recording_start(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            record["status"] = int(status.split(" ", 1)[0])
            return start_response(status, headers, *args)

        return self.counted(self.app(environ, recording_start), record)

    @staticmethod
    def counted(body: Iterable[bytes], record: dict[str, Any]) -> Iterator[bytes]:
        try:
            for chunk in body:
                record["bytes"] += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()

    def control(
        self, command: str, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> list[bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        with self.lock:
            if command == "log":
                body = json.dumps(self.log).encode()
            elif command == "reset":
                self.log = []
                self.count = 0
                self.throttle_every = 0
                body = b"{}"
            elif command == "throttle":
                self.throttle_every = int(query.get("every", ["0"])[0])
                self.count = 0
                body = b"{}"
            else:
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"unknown control request"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]


def serve(port: int) -> None:
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = Recorder(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, app, threaded=True)
    print(f"ready http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


@dataclass
class S3Server:
    """A running server: its URL, the environment a client needs, the recorder's controls."""

    url: str
    process: subprocess.Popen[str]

    @property
    def env(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.url}

    def _control(self, command: str, method: str = "POST") -> Any:
        with urlopen(Request(self.url + CONTROL + command, method=method), timeout=30) as reply:
            return json.loads(reply.read())

    def requests(self) -> list[dict[str, Any]]:
        return self._control("log", "GET")

    def reset(self) -> None:
        self._control("reset")

    def throttle(self, every: int) -> None:
        self._control(f"throttle?every={every}")

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )


@contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """Start ``python -m tests.s3_server`` on a free loopback port; stop it on exit."""
    from tests.serving import free_port  # not at the top: the server process needs no pyspark

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.s3_server", "--port", str(free_port())],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        line = process.stdout.readline() if process.stdout else ""
        if not line.startswith("ready ") or time.monotonic() > deadline:
            raise RuntimeError(f"the S3 server did not start: {line!r}")
        yield S3Server(line.split()[1], process)
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    serve(parser.parse_args().port)


if __name__ == "__main__":
    main()
