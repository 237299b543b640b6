"""The one way an instance arrives from the network: STOW-RS (servers/dicomweb/stow.py) and
C-STORE (servers/dimse/) both hand it to :meth:`Intake.receive`.

What a receive does, in this order, so that an acknowledged instance is never lost:

1. the bytes are written to a partial file in ``<landing>/.incoming`` and fsynced;
2. the header is read once, with dicom_meta's reader (a file it refuses is refused here, with
   its reason, and nothing is kept);
3. the file is renamed to ``<landing>/<StudyUID>/<SeriesUID>/<SOPUID>.dcm`` (UIDs are digits and
   dots: the names are safe) and its folder fsynced: only then does the caller acknowledge;
4. the instance goes into the search index at once (QIDO-RS and C-FIND find it);
5. the landing folder is catalogued by the pipeline's own statements (``ingest``) in
   micro-batches, in the background: a run takes whatever landed before it started, those
   that land during it wait for the next one.

A kill at any moment: a partial file was never acknowledged (the client sends it again; the
next start removes it); a landed file is catalogued by the run the next start schedules.

Instance identity is the SOP Instance UID (docs/server.md, "Instances received"):

- the same bytes again succeed and write nothing (a client's retry);
- other bytes for an instance that was itself received (its file is in the landing folder)
  replace it: the newer is kept, as PACS do, and the catalog's next run reads the new file in
  place of the old (one live row);
- other bytes for an instance catalogued from a folder of the user's are refused with
  0111H, Duplicate SOP Instance (PS3.7 Annex C): that folder is not ours to change, and what
  searches and retrievals return never changes under a client's feet.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import threading
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pixels_sql.dicom.meta import read_model
from pixels_sql.errors import DicomReadError
from pixels_sql.io.paths import to_local_path
from pixels_sql.io.sources import open_source
from pixels_sql.servers.dicomweb.index import index_row
from pixels_sql.servers.dicomweb.query import QueryError, check_uid

if TYPE_CHECKING:
    from pixels_sql.servers.dicomweb.index import CatalogIndex

log = logging.getLogger("pixels_sql.intake")

# Failure reasons, as both protocols spell them (PS3.4 Annex B.2.3 and GG; PS3.18 10.5.3).
CANNOT_UNDERSTAND = 0xC000
STUDY_MISMATCH = 0xA900  # "Data Set does not match SOP Class": STOW-RS uses it for a wrong study
DUPLICATE_SOP_INSTANCE = 0x0111  # PS3.7 Annex C: the UID is held already, with other content
OUT_OF_RESOURCES = 0xA700  # the file could not be written (a full disk)

# How long the cataloguer waits after a first arrival before a run, so a burst is one run.
BATCH_SECONDS = 2.0
# Between two runs back to back, the time another writer has to take the home's lock.
WRITERS_TURN_SECONDS = 1.0
# First wait before a failed landing run is tried again (doubling, at most a minute).
RETRY_SECONDS = 5.0
_COPY_CHUNK = 1 << 20
INCOMING = ".incoming"


def landing_folder(home: Path) -> Path:
    """Where a home keeps the instances received over the network (STOW-RS and C-STORE)."""
    return home / "landing" / "stow"


class Outcome(enum.Enum):
    STORED = "stored"  # written: a new instance
    REPLACED = "replaced"  # written in place of the received instance of the same UID
    ALREADY_HELD = "already held"  # these very bytes are held: nothing written
    REFUSED = "refused"


@dataclass(frozen=True)
class Receipt:
    """What became of one received instance: its UIDs as far as they could be read, and for a
    refusal the failure reason (``reason``) and why (``message``)."""

    outcome: Outcome
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    sop_class_uid: str | None = None
    reason: int | None = None
    message: str = ""
    path: Path | None = None

    @property
    def acknowledged(self) -> bool:
        return self.outcome is not Outcome.REFUSED


def _uid(model: dict[str, Any], tag: str) -> str | None:
    element = model.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    if not values or not isinstance(values[0], str):
        return None
    try:
        return check_uid(values[0])
    except QueryError:
        return None


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _make_folders(root: Path, folder: Path) -> None:
    """Make ``folder`` and its missing parents below ``root``, each new one fsynced into its
    parent (a folder entry is data too: the files under it must survive a crash)."""
    missing = []
    while folder != root and not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
        _fsync_folder(made.parent)


def same_bytes(path: str, local: Path) -> bool:
    """Whether the file (or archive member) at ``path`` holds exactly the bytes of the local
    file ``local``; one that cannot be read counts as different (refusing keeps the catalog
    unchanged)."""
    try:
        with open_source(path) as source, open(local, "rb") as other:
            if source.size != os.fstat(other.fileno()).st_size:
                return False
            fp = source.fp
            fp.seek(0)
            while chunk := other.read(_COPY_CHUNK):
                if fp.read(len(chunk)) != chunk:
                    return False
            return True
    except (OSError, DicomReadError):
        return False


class Intake:
    """Receives instances into a home's landing folder and its search index, and catalogues
    the landing folder in the background (``start`` / ``stop``)."""

    def __init__(
        self,
        index: CatalogIndex,
        landing: Path,
        *,
        batch_seconds: float = BATCH_SECONDS,
        thumbnails: bool = False,
    ) -> None:
        self.index = index
        self.landing = landing
        self.incoming = landing / INCOMING
        self.batch_seconds = batch_seconds
        self.thumbnails = thumbnails
        self._lock = threading.Lock()  # one instance placed at a time (two may share a UID)
        self._pending = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- receiving --------------------------------------------------------------------------

    def receive(
        self, data: bytes | IO[bytes] | Path, source: str, *, study: str | None = None
    ) -> Receipt:
        """Land one instance (its PS3.10 file: bytes, a binary stream or a file to copy) and
        put it into the index; ``source`` names the sender for the log (e.g. ``C-STORE from
        MODALITY@127.0.0.1``); ``study``: refuse an instance of another study (STOW-RS's
        ``/studies/{uid}``). Never raises for what the sender sent: a :class:`Receipt`."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        partial = self.incoming / f"{uuid.uuid4().hex}.part"
        try:
            self._write(partial, data)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            log.error("%s: could not write a received instance: %s", source, exc)
            return Receipt(Outcome.REFUSED, reason=OUT_OF_RESOURCES, message=str(exc))
        try:
            return self._place(partial, source, study)
        finally:
            partial.unlink(missing_ok=True)

    @staticmethod
    def _write(partial: Path, data: bytes | IO[bytes] | Path) -> None:
        with open(partial, "wb") as out:
            if isinstance(data, bytes | bytearray | memoryview):
                out.write(data)
            else:
                # A caller's stream stays open (nullcontext); a file to copy is closed.
                with open(data, "rb") if isinstance(data, Path) else nullcontext(data) as stream:
                    while chunk := stream.read(_COPY_CHUNK):
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())

    def _place(self, partial: Path, source: str, study: str | None) -> Receipt:
        try:
            model = read_model(str(partial))
        except DicomReadError as exc:
            return Receipt(Outcome.REFUSED, reason=CANNOT_UNDERSTAND, message=str(exc))
        uids = {
            key: _uid(model, tag)
            for key, tag in (
                ("study_uid", "0020000D"),
                ("series_uid", "0020000E"),
                ("sop_uid", "00080018"),
                ("sop_class_uid", "00080016"),
            )
        }
        missing = [key for key in ("study_uid", "series_uid", "sop_uid") if uids[key] is None]
        if missing:
            return Receipt(
                Outcome.REFUSED,
                **uids,
                reason=CANNOT_UNDERSTAND,
                message=f"no valid {', '.join(missing)} in the header",
            )
        if study is not None and uids["study_uid"] != study:
            return Receipt(
                Outcome.REFUSED,
                **uids,
                reason=STUDY_MISMATCH,
                message=f"the instance is of study {uids['study_uid']}, not {study}",
            )
        assert uids["study_uid"] and uids["series_uid"] and uids["sop_uid"]
        target = self.landing / uids["study_uid"] / uids["series_uid"] / f"{uids['sop_uid']}.dcm"
        with self._lock:
            held = self._held(uids["sop_uid"], target)
            outside = [path for path in held if not self._in_landing(path)]
            same = next((path for path in held if same_bytes(path, partial)), None)
            if same is not None:
                if self.index.instance(uids["sop_uid"]) is None:
                    # Landed by an earlier process, not catalogued yet: searchable from now,
                    # and catalogued by the next run.
                    self._index(model, target)
                    self._pending.set()
                return Receipt(Outcome.ALREADY_HELD, **uids, path=Path(to_local_path(same)))
            if outside:
                log.warning(
                    "%s refused SOP Instance UID %s: already stored with other content at %s",
                    source,
                    uids["sop_uid"],
                    ", ".join(outside),
                )
                return Receipt(
                    Outcome.REFUSED,
                    **uids,
                    reason=DUPLICATE_SOP_INSTANCE,
                    message=f"SOP Instance UID {uids['sop_uid']} is held with other content",
                )
            try:
                _make_folders(self.landing, target.parent)
                os.replace(partial, target)
                _fsync_folder(target.parent)
                self._pending.set()  # landed: the next run catalogues it, whatever follows
                for older in held:  # the same instance received under another study/series
                    if Path(to_local_path(older)) != target:
                        Path(to_local_path(older)).unlink(missing_ok=True)
                        _fsync_folder(Path(to_local_path(older)).parent)
            except OSError as exc:
                log.error("%s: could not land %s: %s", source, uids["sop_uid"], exc)
                return Receipt(Outcome.REFUSED, **uids, reason=OUT_OF_RESOURCES, message=str(exc))
            self._index(model, target)
        outcome = Outcome.REPLACED if held else Outcome.STORED
        if held:
            log.warning(
                "%s replaced SOP Instance UID %s: received again, the newer kept",
                source,
                uids["sop_uid"],
            )
        return Receipt(outcome, **uids, path=target)

    def _index(self, model: dict[str, Any], landed: Path) -> None:
        status = landed.stat()
        self.index.add(
            index_row(model, f"file:{landed}", status.st_size, status.st_mtime_ns // 1_000_000)
        )

    def index_landed(self) -> int:
        """Put the landed files the index does not serve into it (arrivals of an earlier
        process that its catalog runs had not taken); how many."""
        added = 0
        for folder, folders, names in os.walk(self.landing):
            folders[:] = [name for name in folders if name != INCOMING]
            for name in names:
                if not name.endswith(".dcm"):
                    continue
                landed = Path(folder) / name
                sop_uid = name[: -len(".dcm")]
                if self._serves(sop_uid, landed):
                    continue
                try:
                    model = read_model(str(landed))
                except DicomReadError:
                    continue
                with self._lock:
                    try:
                        if not self._serves(sop_uid, landed):
                            self._index(model, landed)
                            added += 1
                    except OSError:  # replaced or moved meanwhile by a new arrival
                        continue
        return added

    def _serves(self, sop_uid: str, landed: Path) -> bool:
        """Whether the index serves ``landed`` as it is now (same path, same modification), or
        a newer landed copy of its instance (received under another study or series after it:
        the older file is removed, as its receive would have)."""
        served = self.index.instance(sop_uid)
        if served is None:
            return False
        mtime_ms = landed.stat().st_mtime_ns // 1_000_000
        served_path = Path(to_local_path(served.path))
        if served_path == landed:
            return served.modified_ms == mtime_ms
        if self._in_landing(served.path) and served.modified_ms > mtime_ms:
            landed.unlink(missing_ok=True)
            return True
        return False

    def _in_landing(self, path: str) -> bool:
        return Path(to_local_path(path)).is_relative_to(self.landing)

    def _held(self, sop_uid: str, target: Path) -> list[str]:
        """The files holding ``sop_uid`` now: the copy the index serves (catalogued, or
        received before), and a landed file the index does not know (a run under way)."""
        held = []
        served = self.index.instance(sop_uid)
        if served is not None:
            held.append(served.path)
        if target.exists() and (served is None or Path(to_local_path(served.path)) != target):
            held.append(f"file:{target}")
        return held

    # -- cataloguing ------------------------------------------------------------------------

    def start(self) -> None:
        """Remove partial files of an earlier process (never acknowledged), put what it landed
        and the catalog lacks into the index and catalogue it, then keep cataloguing in the
        background."""
        if self.incoming.exists():
            for partial in self.incoming.glob("*.part"):
                partial.unlink(missing_ok=True)
        _make_folders(self.landing.parent.parent, self.incoming)
        self._thread = threading.Thread(target=self._catalogue_loop, name="intake", daemon=True)
        self._thread.start()
        threading.Thread(target=self._index_landed_logged, name="intake-index", daemon=True).start()

    def _index_landed_logged(self) -> None:
        try:
            added = self.index_landed()
        except Exception:
            log.exception("indexing the landing folder's uncatalogued files failed")
            self._pending.set()  # the run catalogues them all the same
            return
        if added:
            # An earlier process acknowledged them and stopped before its catalog run.
            log.warning("%d landed instances were not catalogued: cataloguing them", added)
            self._pending.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._pending.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _catalogue_loop(self) -> None:
        failures = 0
        ran_until = -math.inf
        while not self._stop.is_set():
            self._pending.wait()
            if self._stop.is_set():
                return
            # The first arrival after a quiet spell waits a moment, so that a burst is one run;
            # arrivals during a run are taken by the next one after a short turn for any other
            # writer waiting for the home's lock (it polls every 0.25 s; without the turn,
            # stores arriving all along would starve a CLI ingest).
            quiet = time.monotonic() - ran_until > self.batch_seconds
            if self._stop.wait(self.batch_seconds if quiet else WRITERS_TURN_SECONDS):
                return
            self._pending.clear()
            try:
                self.catalogue_landing()
                ran_until = time.monotonic()
                failures = 0
            except Exception:
                # The files stay in the landing folder: try again, later each time, until a
                # run takes them (every acknowledged instance must reach the catalog).
                failures += 1
                delay = min(RETRY_SECONDS * 2 ** (failures - 1), 60.0)
                log.exception(
                    "cataloguing the landing folder failed (attempt %d); again in %.0f s",
                    failures,
                    delay,
                )
                self._pending.set()
                if self._stop.wait(delay):
                    return

    def catalogue_landing(self) -> None:
        """Ingest the landing folder with the pipeline. Holds the home's writer lock, waiting as
        long as another run (a CLI ingest) writes."""
        from pixels_sql.ingest import ingest
        from pixels_sql.tables import writing

        if not self.landing.exists():
            return
        started = time.monotonic()
        with writing(
            self.index.spark,
            holder="pixels-sql serve (landing ingest: STOW-RS, C-STORE)",
            wait=math.inf,
            say=log.warning,
        ):
            # Without thumbnails unless asked: `pixels-sql ingest` of the landing folder renders
            # them, and the thumbnail resource renders on request meanwhile.
            ingest(
                self.index.spark,
                str(self.landing),
                self.index.database,
                thumbnails=self.thumbnails,
            )
        # The index's own refresh (every few seconds) reads the new partition; until then the
        # received instances are served from what the intake put into it.
        log.info("landing folder catalogued in %.1f s", time.monotonic() - started)
