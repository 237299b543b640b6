"""The sending side of DICOM networking: ``pixels-sql store`` pushes files to a peer (a PACS, a
workstation) with C-STORE (PS3.4 B.2), each data set sent byte for byte in its stored transfer
syntax.

Each file's SOP class and transfer syntax (from its File Meta Information) makes one proposed
presentation context, so the peer accepts or refuses each as stored; pynetdicom then sends the
data set from the file in chunks (``STORE_SEND_CHUNKED_DATASET``), never decoded. A file the
peer has no context for, one that is not DICOM, and one the peer refuses are reported with the
reason; the others are still sent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from pixels_sql.servers.dimse.peers import Peer

log = logging.getLogger("pixels_sql.dimse")

# A-ASSOCIATE-RQ carries at most 128 presentation contexts (PS3.8 9.3.2.2: odd IDs 1-255).
MAX_CONTEXTS = 128
_SUCCESS_OR_WARNING = {0x0000, 0xB000, 0xB006, 0xB007}


@dataclass
class SendReport:
    sent: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    def line(self) -> str:
        return f"store: {self.sent} sent, {len(self.failed)} failed"


def dicom_files(paths: Iterable[str]) -> Iterator[str]:
    """The files of ``paths`` (files, and folders walked in name order; hidden names
    skipped, as listing does)."""
    for path in paths:
        if os.path.isdir(path):
            for folder, folders, names in os.walk(path):
                folders[:] = sorted(name for name in folders if not name.startswith("."))
                for name in sorted(names):
                    if not name.startswith("."):
                        yield os.path.join(folder, name)
        else:
            yield path


def _context_key(path: str) -> tuple[str, str] | str:
    """(SOP class, transfer syntax) from the file's meta information, or why it has none."""
    try:
        meta = read_file_meta_info(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        return f"not a DICOM file with File Meta Information (PS3.10 7.1): {exc}"
    sop_class = meta.get("MediaStorageSOPClassUID")
    syntax = meta.get("TransferSyntaxUID")
    if not sop_class or not syntax:
        return "no Media Storage SOP Class UID or Transfer Syntax UID in its meta information"
    return str(sop_class), str(syntax)


def send_files(
    files: Iterable[str],
    peer: Peer,
    *,
    calling_ae_title: str,
    say: Callable[[str], None] = lambda _text: None,
) -> SendReport:
    """C-STORE each file to ``peer``, in associations of at most 128 presentation contexts."""
    from pynetdicom import _config

    _config.STORE_SEND_CHUNKED_DATASET = True
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    report = SendReport()
    batches: list[dict[tuple[str, str], list[str]]] = [{}]
    for path in files:
        key = _context_key(path)
        if isinstance(key, str):
            report.failed.append((path, key))
            continue
        batch = batches[-1]
        if key not in batch and len(batch) == MAX_CONTEXTS:
            batch = {}
            batches.append(batch)
        batch.setdefault(key, []).append(path)
    for batch in batches:
        if batch:
            _send_batch(batch, peer, calling_ae_title, report, say)
    return report


def _send_batch(
    batch: dict[tuple[str, str], list[str]],
    peer: Peer,
    calling_ae_title: str,
    report: SendReport,
    say: Callable[[str], None],
) -> None:
    from pynetdicom import AE, build_context

    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    contexts = [build_context(sop_class, [syntax]) for sop_class, syntax in batch]
    items = [(key, path) for key, group in batch.items() for path in group]
    assoc = ae.associate(peer.host, peer.port, contexts=contexts, ae_title=peer.ae_title)
    if not assoc.is_established:
        why = f"no association with {peer.ae_title}@{peer.host}:{peer.port}" + (
            " (rejected)" if assoc.is_rejected else " (refused or unreachable)"
        )
        report.failed += [(path, why) for _, path in items]
        return
    accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    try:
        for position, (key, path) in enumerate(items):
            if key not in accepted:
                report.failed.append(
                    (path, f"the peer accepts no context for {key[0]} in {key[1]}")
                )
                continue
            status = _store(assoc, path)
            if isinstance(status, int) and status in _SUCCESS_OR_WARNING:
                report.sent += 1
                say(f"sent {path}")
            else:
                report.failed.append((path, _status_text(status)))
            if not assoc.is_established:
                report.failed += [
                    (rest, "the association ended") for _, rest in items[position + 1 :]
                ]
                return
    finally:
        if assoc.is_established:
            assoc.release()


def _store(assoc: Any, path: str) -> int | str:
    try:
        response = assoc.send_c_store(Path(path))
    except (ValueError, OSError, AttributeError) as exc:
        return f"not sent: {exc}"
    if not response or "Status" not in response:
        return "no answer from the peer (timeout or aborted association)"
    return int(response.Status)


def _status_text(status: int | str) -> str:
    if isinstance(status, str):
        return status
    return f"refused by the peer with status {status:04X}H"
