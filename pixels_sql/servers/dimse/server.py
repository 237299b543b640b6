"""The DIMSE service of ``pixels-sql serve --dicom-port`` (pynetdicom's threaded association
server, one thread per association): C-ECHO; C-STORE into the home through the intake
(``--allow-store``); C-FIND, C-MOVE and C-GET, Patient Root and Study Root, over the DICOMweb
index (find.py). docs/dimse.md is its conformance statement.

Every association is logged to ``<home>/logs/dimse.log``: who called (AE title, address),
accepted or rejected and why, what it asked, how it ended.
"""

from __future__ import annotations

import logging
import logging.handlers
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from pixels_sql.dicom.meta import read_pydicom_file
from pixels_sql.errors import DicomReadError
from pixels_sql.io.paths import to_local_path
from pixels_sql.io.sources import open_source
from pixels_sql.servers.dicomweb.http import HTTPError
from pixels_sql.servers.dimse.find import IdentifierError, find, instances_of
from pixels_sql.servers.dimse.peers import (
    DEFAULT_AE_TITLE,
    DEFAULT_DICOM_PORT,
    Peer,
    plain_address,
)

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.events import Event

    from pixels_sql.servers.dicomweb.index import Instance
    from pixels_sql.servers.dicomweb.service import Service
    from pixels_sql.servers.intake import Intake

log = logging.getLogger("pixels_sql.dimse")

# Statuses (PS3.4 Annex B.2.3, C.4; PS3.7 Annex C).
SUCCESS = 0x0000
PENDING = 0xFF00
CANCELLED = 0xFE00
NOT_AUTHORIZED = 0x0124  # PS3.7 Annex C general status: C-STORE while storing is off
UNABLE_TO_SUBOPERATE = 0xA702  # C-MOVE/C-GET: a file could not be read for a sub-operation
# The syntaxes a data set without compression may be sent in (PS3.5 A.1-A.2): proposed beside
# the stored one, so a peer that takes only the default still receives it.
_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
# A C-MOVE's association proposes at most 128 presentation contexts (PS3.8 9.3.2.2: context IDs
# are odd numbers 1-255).
_MAX_CONTEXTS = 128


@dataclass
class DimseOptions:
    host: str = "127.0.0.1"
    port: int = DEFAULT_DICOM_PORT
    ae_title: str = DEFAULT_AE_TITLE
    # The peers file's AEs (peers.py): None, any AE title may call, and C-MOVE has no
    # destination.
    peers: dict[str, Peer] | None = None
    tls: ssl.SSLContext | None = None
    max_associations: int = 16
    # Seconds without a PDU before an association is aborted (a peer that stopped talking).
    network_timeout: float = 60.0
    max_pdu: int = 262_144
    log_dir: Path | None = None


def _configure_pynetdicom() -> None:
    from pynetdicom import _config

    # C-STORE data sets go to a file as they arrive, not into memory (the intake copies the
    # file into the landing folder, byte for byte); memory stays bounded however large the
    # instance and however many associations send at once.
    _config.STORE_RECV_CHUNKED_DATASET = True
    # pynetdicom logs every PDU at INFO; the association log here says what matters.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def _requestor(event: Event) -> str:
    requestor = event.assoc.requestor
    return f"{requestor.ae_title}@{requestor.address}:{requestor.port}"


class DimseServer:
    """The running DIMSE service; :meth:`stop` ends it."""

    def __init__(self, service: Service, intake: Intake | None, options: DimseOptions) -> None:
        self.service = service
        self.intake = intake
        self.options = options
        self._server: Any = None
        self._ae: AE | None = None
        self._log_handler: logging.Handler | None = None

    # -- set-up -----------------------------------------------------------------------------

    def _application_entity(self) -> AE:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
        from pynetdicom.sop_class import (
            PatientRootQueryRetrieveInformationModelFind,
            PatientRootQueryRetrieveInformationModelGet,
            PatientRootQueryRetrieveInformationModelMove,
            StudyRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelGet,
            StudyRootQueryRetrieveInformationModelMove,
            Verification,
        )

        ae = AE(ae_title=self.options.ae_title)
        ae.maximum_associations = self.options.max_associations
        ae.network_timeout = self.options.network_timeout
        ae.acse_timeout = 30
        ae.dimse_timeout = self.options.network_timeout
        ae.maximum_pdu_size = self.options.max_pdu
        if self.options.peers is not None:
            # PS3.8 7.1.1.3: an association whose calling AE title is not a peer is rejected
            # ("calling AE title not recognized").
            ae.require_calling_aet = list(self.options.peers)
        ae.add_supported_context(Verification)
        for context in (
            PatientRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelFind,
            PatientRootQueryRetrieveInformationModelMove,
            StudyRootQueryRetrieveInformationModelMove,
            PatientRootQueryRetrieveInformationModelGet,
            StudyRootQueryRetrieveInformationModelGet,
        ):
            ae.add_supported_context(context)
        # Every storage SOP class in every transfer syntax, as stored: as C-STORE SCP, and with
        # both roles for C-GET (PS3.4 C.4.3.1: its instances come back on the same
        # association, the requestor acting as the Storage SCP).
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(
                context.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
            )
        return ae

    def start(self) -> None:
        from pynetdicom import evt

        _configure_pynetdicom()
        if self.options.log_dir is not None:
            self.options.log_dir.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.WatchedFileHandler(
                self.options.log_dir / "dimse.log", encoding="utf-8"
            )
            handler.setFormatter(
                logging.Formatter(
                    "%(asctime)s.%(msecs)03d %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"
                )
            )
            handler.setLevel(logging.INFO)
            log.addHandler(handler)
            if log.level == logging.NOTSET or log.level > logging.INFO:
                log.setLevel(logging.INFO)
            self._log_handler = handler
        self._ae = self._application_entity()
        handlers = [
            (evt.EVT_C_ECHO, self._echo),
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_C_FIND, self._find),
            (evt.EVT_C_GET, self._get),
            (evt.EVT_C_MOVE, self._move),
            (evt.EVT_REQUESTED, self._requested),
            (evt.EVT_ACCEPTED, self._accepted),
            (evt.EVT_REJECTED, self._logged("rejected")),
            (evt.EVT_ABORTED, self._logged("aborted")),
            (evt.EVT_RELEASED, self._logged("released")),
        ]
        self._server = self._ae.start_server(
            (self.options.host, self.options.port),
            block=False,
            evt_handlers=handlers,
            ssl_context=self.options.tls,
        )
        log.info(
            "DIMSE service %s listening on %s:%d%s",
            self.options.ae_title,
            self.options.host,
            self.options.port,
            " (TLS)" if self.options.tls else "",
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._ae is not None:
            self._ae.shutdown()  # the associations still open, too
        if self._log_handler is not None:
            log.removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    # -- associations -----------------------------------------------------------------------

    def _requested(self, event: Event) -> None:
        """Before negotiation: refuse a peer's AE title calling from another host, and take
        each presentation context's transfer syntax in the requestor's order of preference
        (PS3.8 9.3.2.2 lists them by preference; pynetdicom's own choice follows the
        acceptor's list, which would make a C-GET requestor that prefers the stored JPEG 2000
        receive Implicit VR Little Endian, which pynetdicom cannot transcode to)."""
        assoc = event.assoc
        requestor = assoc.requestor
        peers = self.options.peers
        if peers is not None:
            title = str(requestor.primitive.calling_ae_title).strip()
            peer = peers.get(title)
            if peer is None or plain_address(requestor.address) not in peer.addresses():
                where = f"a peer at {peer.host}" if peer is not None else "not a peer"
                log.warning(
                    "association from %s@%s:%s rejected: AE title %s is %s",
                    title,
                    requestor.address,
                    requestor.port,
                    title,
                    where,
                )
                # PS3.8 Table 9-21: rejected-permanent, by the service user, calling AE title
                # not recognized; then as pynetdicom ends an association it rejects itself
                # (its DUL thread stopped once the rejection is sent).
                assoc.acse.send_reject(0x01, 0x01, 0x03)
                assoc.kill()
                return
        supported = {cx.abstract_syntax: cx for cx in assoc.acceptor.supported_contexts}
        ordered = {}
        for proposed in requestor.primitive.presentation_context_definition_list:
            ours = supported.get(proposed.abstract_syntax)
            if ours is None or proposed.abstract_syntax in ordered:
                continue
            preferred = [ts for ts in proposed.transfer_syntax if ts in ours.transfer_syntax]
            ordered[proposed.abstract_syntax] = _with_syntaxes(ours, preferred)
        assoc.acceptor.supported_contexts = [ordered.get(uid, cx) for uid, cx in supported.items()]

    def _accepted(self, event: Event) -> None:
        log.info("association from %s accepted", _requestor(event))

    @staticmethod
    def _logged(what: str) -> Any:
        def handler(event: Event) -> None:
            level = logging.WARNING if what == "rejected" else logging.INFO
            log.log(level, "association from %s %s", _requestor(event), what)

        return handler

    # -- services ---------------------------------------------------------------------------

    def _echo(self, event: Event) -> int:
        log.info("C-ECHO from %s", _requestor(event))
        return SUCCESS

    def _store(self, event: Event) -> int:
        source = f"C-STORE from {_requestor(event)}"
        if self.intake is None:
            log.warning("%s refused: storing is off (serve --allow-store)", source)
            return NOT_AUTHORIZED
        receipt = self.intake.receive(Path(event.dataset_path), source)
        if receipt.acknowledged:
            log.info("%s: %s %s", source, receipt.sop_uid, receipt.outcome.value)
            return SUCCESS
        log.warning("%s: refused (%04X): %s", source, receipt.reason, receipt.message)
        assert receipt.reason is not None
        return receipt.reason

    def _find(self, event: Event) -> Iterator[tuple[int, Dataset | None]]:
        source = _requestor(event)
        count = 0
        try:
            for answer in find(self.service, event.identifier, self.options.ae_title):
                if event.is_cancelled:
                    log.info("C-FIND from %s cancelled after %d answers", source, count)
                    yield CANCELLED, None
                    return
                count += 1
                yield PENDING, answer
        except IdentifierError as exc:
            log.warning("C-FIND from %s refused after %d answers: %s", source, count, exc)
            yield exc.status, None
            return
        log.info("C-FIND from %s: %d answers", source, count)
        yield SUCCESS, None

    def _selected(self, event: Event, what: str) -> list[Instance] | int:
        """The instances a retrieve sends, or the status refusing it."""
        try:
            chosen = instances_of(self.service, event.identifier)
        except IdentifierError as exc:
            log.warning("%s from %s refused: %s", what, _requestor(event), exc)
            return exc.status
        fresh = []
        for instance in chosen:
            try:
                self.service.check_fresh(instance)
            except HTTPError as exc:
                log.warning("%s from %s: %s", what, _requestor(event), exc.message)
                continue
            fresh.append(instance)
        return fresh

    def _datasets(
        self, event: Event, instances: list[Instance], what: str
    ) -> Iterator[tuple[int, Dataset | None]]:
        for instance in instances:
            if event.is_cancelled:
                log.info("%s from %s cancelled", what, _requestor(event))
                yield CANCELLED, None
                return
            try:
                dataset = _read_instance(instance)
            except (OSError, DicomReadError) as exc:
                log.warning(
                    "%s from %s: instance %s could not be read: %s",
                    what,
                    _requestor(event),
                    instance.sop_uid,
                    exc,
                )
                yield UNABLE_TO_SUBOPERATE, None
                return
            yield PENDING, dataset
        log.info("%s from %s: %d instances offered", what, _requestor(event), len(instances))

    def _get(self, event: Event) -> Iterator[Any]:
        instances = self._selected(event, "C-GET")
        if isinstance(instances, int):
            # pynetdicom answers Success to a count of 0 without asking further: one, then the
            # failure status.
            yield 1
            yield instances, None
            return
        yield len(instances)
        yield from self._datasets(event, instances, "C-GET")

    def _move(self, event: Event) -> Iterator[Any]:
        destination = event.move_destination
        title = (
            destination.decode("ascii", "replace")
            if isinstance(destination, bytes)
            else str(destination)
        ).strip()
        peer = (self.options.peers or {}).get(title)
        if peer is None:
            log.warning(
                "C-MOVE from %s to %s refused: not a destination of the peers file",
                _requestor(event),
                title,
            )
            yield None, None  # PS3.4 C.4.2.1.5: A801, Move Destination unknown
            return
        instances = self._selected(event, "C-MOVE")
        if isinstance(instances, int):
            # pynetdicom opens the association with the destination before it takes the
            # refusal: it proposes Verification alone.
            from pynetdicom import build_context
            from pynetdicom.sop_class import Verification

            yield peer.host, peer.port, {"contexts": [build_context(Verification)]}
            yield 1
            yield instances, None
            return
        yield peer.host, peer.port, {"contexts": _contexts(instances), "max_pdu": 0}
        yield len(instances)
        yield from self._datasets(event, instances, f"C-MOVE to {title}")


def _with_syntaxes(context: Any, syntaxes: list[str]) -> Any:
    """A copy of a supported presentation context, its transfer syntaxes ``syntaxes`` first."""
    from pynetdicom.presentation import PresentationContext

    copy = PresentationContext()
    copy.abstract_syntax = context.abstract_syntax
    rest = [ts for ts in context.transfer_syntax if ts not in syntaxes]
    copy.transfer_syntax = [*syntaxes, *rest]
    copy.scu_role = context.scu_role
    copy.scp_role = context.scp_role
    return copy


def _read_instance(instance: Instance) -> Dataset:
    """The catalogued file as pynetdicom sends it: every element as read, so the data set goes
    out byte for byte in its stored transfer syntax."""
    with open_source(instance.path) as source:
        return read_pydicom_file(to_local_path(instance.path), source.fp, source.size)


def _contexts(instances: list[Instance]) -> list[Any]:
    """The presentation contexts a C-MOVE proposes to its destination: each SOP class in its
    stored transfer syntax (and, uncompressed, the other native ones)."""
    from pynetdicom import build_context

    wanted: dict[str, list[str]] = {}
    for instance in instances:
        if not instance.sop_class_uid:
            continue
        syntax = UID(instance.transfer_syntax or ImplicitVRLittleEndian)
        syntaxes = wanted.setdefault(instance.sop_class_uid, [])
        for candidate in (syntax, *(_NATIVE if not syntax.is_compressed else ())):
            if candidate not in syntaxes:
                syntaxes.append(candidate)
    contexts = []
    for sop_class, syntaxes in wanted.items():
        # Each stored syntax a context of its own: the peer accepts or rejects each.
        for syntax in syntaxes:
            contexts.append(build_context(sop_class, [syntax]))
    if len(contexts) > _MAX_CONTEXTS:
        log.warning(
            "C-MOVE: %d presentation contexts needed, %d proposed: instances of the others fail",
            len(contexts),
            _MAX_CONTEXTS,
        )
    return contexts[:_MAX_CONTEXTS]
