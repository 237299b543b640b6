"""The de-identification key and what is derived from it: new UIDs, pseudonyms, date offsets.

Every replacement is a keyed hash (HMAC-SHA-256) of the original, so the same original gives
the same replacement in every file, on every executor and in every run, and nobody without the
key can go back. The key comes from the file ``PIXELS_SQL_DEID_KEY_FILE`` names or from
``PIXELS_SQL_DEID_KEY`` (config.py), never from SQL text or a table, and is never logged or
put in an error message.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from pixels_sql import config

MIN_KEY_BYTES = 16
# Modified Dates move a patient's dates back by a whole number of days in this range: a whole
# number keeps times of day, weekdays shift but intervals do not.
SHIFT_DAYS = (365, 3652)
# Root for derived UIDs: PS3.5 B.2, a UUID's 128 bits as a decimal integer under 2.25.
UUID_ROOT = "2.25."


class DeidKeyError(ValueError):
    """No usable key: the message says how to provide one (it never holds the key)."""


def load_key() -> bytes:
    """The key from the settings: the file's bytes, else the variable's text (UTF-8)."""
    path = config.settings.deid_key_file
    if path is not None:
        try:
            key = path.read_bytes().strip()
        except OSError as error:
            raise DeidKeyError(
                f"PIXELS_SQL_DEID_KEY_FILE: cannot read {path}: {error.strerror}"
            ) from None
        source = f"the file {path}"
    else:
        key = (config.settings.deid_key or "").encode("utf-8")
        source = "PIXELS_SQL_DEID_KEY"
        if not key:
            raise DeidKeyError(
                "no de-identification key: set PIXELS_SQL_DEID_KEY_FILE to a file holding at"
                f" least {MIN_KEY_BYTES} random bytes (e.g. `head -c 32 /dev/urandom > deid.key`)"
                " or PIXELS_SQL_DEID_KEY"
            )
    if len(key) < MIN_KEY_BYTES:
        raise DeidKeyError(
            f"the de-identification key in {source} has {len(key)} bytes;"
            f" use at least {MIN_KEY_BYTES}"
        )
    return key


@dataclass
class Pseudonyms:
    """Replacements derived from ``key``; remembers the UIDs it replaced (for the mapping
    table the CLI writes)."""

    key: bytes = field(repr=False)
    uids: dict[str, str] = field(default_factory=dict)

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self.key, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """A new UID for ``original``, the same for the same original everywhere."""
        original = original.strip("\0 ")
        new = self.uids.get(original)
        if new is None:
            new = UUID_ROOT + str(int.from_bytes(self._digest("uid", original)[:16], "big"))
            self.uids[original] = new
        return new

    def token(self, kind: str, value: str, length: int = 12) -> str:
        """``length`` upper-case base-32 characters standing for ``value``."""
        import base64

        return base64.b32encode(self._digest(kind, value)).decode("ascii")[:length]

    def patient_id(self, patient: str) -> str:
        return f"PX{self.token('patient', patient)}"

    def patient_name(self, patient: str) -> str:
        # PN: family name component only (PS3.5 6.2): a pseudonym, not a made-up person
        return f"PSEUDONYM^{self.token('patient', patient)}"

    def shift_days(self, patient: str) -> int:
        """Days every date of ``patient`` moves back (Modified Dates)."""
        low, high = SHIFT_DAYS
        number = int.from_bytes(self._digest("days", patient)[:8], "big")
        return low + number % (high - low + 1)
