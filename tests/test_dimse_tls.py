"""DICOM over TLS (PS3.15 B.1) on the DIMSE port: DCMTK's echoscu with TLS against the DIMSE
service with a certificate made here, and a client without TLS refused. The service runs in
this process over the test session's Spark (an index of an empty catalog): what is tested is
the transport, the rest of the service is test_dimse.py's."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator

import pytest

from pixels_sql.servers.dicomweb.index import CatalogIndex
from pixels_sql.servers.dicomweb.service import Service, ServiceOptions
from pixels_sql.servers.dimse.server import DimseOptions, DimseServer
from tests.serving import free_port

pytestmark = pytest.mark.skipif(
    shutil.which("echoscu") is None or shutil.which("openssl") is None,
    reason="DCMTK or openssl missing: run scripts/check-dicom-tools",
)


@pytest.fixture(scope="module")
def tls_server(spark, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("tls")
    key, certificate = folder / "server.key", folder / "server.crt"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-keyout", str(key), "-out", str(certificate)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    port = free_port()
    service = Service(CatalogIndex(spark, "dimse_tls_no_catalog"), ServiceOptions())
    server = DimseServer(
        service, None, DimseOptions(port=port, tls=context, log_dir=folder / "logs")
    )
    server.start()
    try:
        yield port
    finally:
        server.stop()


def echo(port: int, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["echoscu", *options, "-aec", "PIXELS", "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_echo_over_tls(tls_server: int) -> None:
    # +tla: TLS without a client certificate; -ic: the test's self-signed server certificate.
    answer = echo(tls_server, "+tla", "-ic")
    assert answer.returncode == 0, answer.stderr


def test_a_client_without_tls_is_not_served(tls_server: int) -> None:
    answer = echo(tls_server, "-to", "5", "-ta", "5")
    assert answer.returncode != 0
    assert echo(tls_server, "+tla", "-ic").returncode == 0  # still serving
