"""Run the DICOMweb service in the ``pixels-sql serve`` process: an HTTP server (uvicorn) on a
thread of its own, and a thread that keeps the index in step with the catalog."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pixels_sql.servers.dicomweb.app import Service, ServiceOptions
from pixels_sql.servers.dicomweb.index import CatalogIndex

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger("pixels_sql.dicomweb")

# How often the index checks the catalog for new partitions (a metastore call, no Spark job).
REFRESH_SECONDS = 5.0


@dataclass
class DicomwebServer:
    """The running service; :meth:`stop` ends both threads."""

    service: Service
    host: str
    port: int
    _http: object = None
    _threads: tuple[threading.Thread, ...] = ()
    _stop: threading.Event | None = None

    def start(self, ready_timeout: float = 60.0) -> None:
        import uvicorn

        config = uvicorn.Config(
            self.service,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # One worker thread pool; the views run there (asyncio.to_thread).
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        self._http = server
        self._stop = threading.Event()
        http = threading.Thread(target=server.run, name="dicomweb-http", daemon=True)
        refresher = threading.Thread(target=self._refresh_loop, name="dicomweb-index", daemon=True)
        self._threads = (http, refresher)
        http.start()
        deadline = time.monotonic() + ready_timeout
        while not server.started:
            if not http.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the DICOMweb service did not start on {self.host}:{self.port}")
            time.sleep(0.05)
        refresher.start()

    def _refresh_loop(self) -> None:
        assert self._stop is not None
        failures = 0
        while not self._stop.wait(REFRESH_SECONDS):
            try:
                self.service.index.refresh()
            except Exception:
                # A catalog being rewritten by a run: the index keeps serving its last copy and
                # tries again at the next tick (a failed build leaves the partitions it saw
                # unrecorded, so the next tick rebuilds). The traceback once per failure series.
                failures += 1
                if failures == 1:
                    log.warning("DICOMweb index refresh failed; retrying", exc_info=True)
                else:
                    log.warning("DICOMweb index refresh failed again (%d in a row)", failures)
                continue
            if failures:
                log.warning("DICOMweb index refresh recovered after %d failures", failures)
                failures = 0

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._http is not None:
            self._http.should_exit = True  # type: ignore[attr-defined]
        for thread in self._threads:
            thread.join(timeout=10)


def start_dicomweb(
    spark: SparkSession, database: str, host: str, port: int, options: ServiceOptions
) -> DicomwebServer:
    """Build the index from ``database`` and serve it on ``host:port`` under /dicomweb."""
    index = CatalogIndex(spark.newSession(), database)
    index.refresh(force=True)
    server = DicomwebServer(Service(index, options), host, port)
    server.start()
    return server
