"""The peers file of ``pixels-sql serve --dicom-peers`` and ``pixels-sql store --to``: the DICOM
application entities this server talks to, by AE title, host and port.

A TOML file with one ``[[peer]]`` table per application entity::

    [[peer]]
    ae_title = "ORTHANC"
    host = "127.0.0.1"
    port = 4242

With a peers file, only its AE titles may open an association, each from its own host, and
C-MOVE sends only to them; without one, any AE title may call (on loopback unless ``--host``
says otherwise) and C-MOVE has no destination.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import tomllib

# The port DICOM's registered port (PS3.8 9.1.1.3 / IANA "dicom" 11112) and the AE title this
# server answers to unless told otherwise.
DEFAULT_DICOM_PORT = 11112
DEFAULT_AE_TITLE = "PIXELS"
# PS3.5 6.2 AE: at most 16 characters of the default repertoire, no backslash or control
# characters; leading and trailing spaces are not significant.
_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")


class PeersError(ValueError):
    """A peers file or AE address that cannot be used, with the reason."""


def check_ae_title(title: str) -> str:
    """An AE title as PS3.5 allows it (stripped of its padding); PeersError if not."""
    stripped = title.strip()
    if not stripped or not _AE_TITLE.fullmatch(stripped):
        raise PeersError(
            f"not a valid AE title: {title[:40]!r} (1-16 printable characters, no backslash)"
        )
    return stripped


@dataclass(frozen=True)
class Peer:
    ae_title: str
    host: str
    port: int

    def addresses(self) -> set[str]:
        """The IP addresses its host name stands for (an association's source is one; see
        :func:`plain_address`)."""
        try:
            return {str(ipaddress.ip_address(self.host))}
        except ValueError:
            pass
        try:
            return {info[4][0] for info in socket.getaddrinfo(self.host, None)}
        except OSError:
            return set()


def plain_address(address: str) -> str:
    """An IPv4 peer's address as a dual-stack socket reports it (``::ffff:a.b.c.d``) made
    plain ``a.b.c.d``, so it compares with its peers-file host.

    >>> plain_address("::ffff:127.0.0.1"), plain_address("10.0.0.7")
    ('127.0.0.1', '10.0.0.7')
    """
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    mapped = getattr(parsed, "ipv4_mapped", None)
    return str(mapped) if mapped is not None else str(parsed)


def _port(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise PeersError(f"{where}: port must be a number from 1 to 65535, got {value!r}")
    return value


def load_peers(path: Path) -> dict[str, Peer]:
    """The peers of a peers file, by AE title."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PeersError(f"cannot read the peers file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PeersError(f"the peers file {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"peer"}
    if unknown:
        raise PeersError(f"{path}: unknown tables {sorted(unknown)}: only [[peer]] is read")
    peers: dict[str, Peer] = {}
    for number, entry in enumerate(data.get("peer", []), start=1):
        where = f"{path}, peer {number}"
        if not isinstance(entry, dict):
            raise PeersError(f"{where}: a peer is a [[peer]] table")
        extra = set(entry) - {"ae_title", "host", "port"}
        if extra or not {"ae_title", "host", "port"} <= set(entry):
            raise PeersError(f"{where}: a peer has exactly ae_title, host and port")
        title = check_ae_title(str(entry["ae_title"]))
        if title in peers:
            raise PeersError(f"{where}: AE title {title} is named twice")
        host = str(entry["host"]).strip()
        if not host:
            raise PeersError(f"{where}: host is empty")
        peers[title] = Peer(title, host, _port(entry["port"], where))
    if not peers:
        # pynetdicom reads an empty list of calling AE titles as "any": never let a file that
        # names no one open the port to everyone.
        raise PeersError(f"the peers file {path} names no [[peer]]")
    return peers


def parse_address(text: str) -> Peer:
    """``AE@host:port`` (the form of ``pixels-sql store --to``) as a Peer.

    >>> parse_address("ORTHANC@127.0.0.1:4242")
    Peer(ae_title='ORTHANC', host='127.0.0.1', port=4242)
    """
    title, at, address = text.rpartition("@")
    host, colon, port = address.rpartition(":")
    if not at or not colon or not host or not port.isdigit():
        raise PeersError(f"not an AE address: {text[:80]!r} (AE_TITLE@host:port)")
    return Peer(check_ae_title(title), host.strip("[]"), _port(int(port), text))
