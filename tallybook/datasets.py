"""Data sets and tokens: names, rules and secrets (no I/O)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime

_SEGMENT = re.compile(r"[a-z0-9][a-z0-9-]*", re.ASCII)
NAME_PATTERN = "[a-z0-9][a-z0-9_]*_[a-z0-9_]*"
_TOKEN_PREFIX = "tb_"
TOKEN_BYTES = 32  # 256 bits of randomness, as DESIGN.md requires

READ = "read"
WRITE = "write"
ADMIN = "admin"


@dataclass(frozen=True)
class DataSet:
    """A named collection of records, addressed by group and type.

    Attributes:
        group: the data group, e.g. `carers-allowance`.
        type: the data type, e.g. `transaction-count`.
        auto_ids: fields whose values make the `_id` of records sent
            without one.
        public: whether anyone may read it without a token.
        description: free text for people.
        max_age_expected: seconds after which the data set counts as stale.
        id: the store's key for it, once stored.
    """

    group: str
    type: str
    auto_ids: tuple[str, ...] = ()
    public: bool = False
    description: str = ""
    max_age_expected: int | None = None
    id: int | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """The data set name: `<group>_<type>` with `-` made `_`."""
        return data_set_name(self.group, self.type)


@dataclass(frozen=True)
class Grant:
    """What a token allows, as found in the store.

    Attributes:
        scopes: any of `read`, `write`, `admin`.
        data_set: the data set the token belongs to; None for admin tokens.
        expires_at: when the token stops working, if ever.
        revoked_at: when the token was revoked, if it was.
    """

    scopes: frozenset[str]
    data_set: DataSet | None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def is_active(self, now: datetime) -> bool:
        """Whether the token may be used at `now`."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.expires_at is None or now < self.expires_at

    def allows(self, scope: str, data_set_name: str) -> bool:
        """Whether the token grants `scope` on the named data set."""
        if ADMIN in self.scopes:
            return True
        if self.data_set is None or self.data_set.name != data_set_name:
            return False
        return scope in self.scopes


def data_set_name(group: str, type: str) -> str:
    """Derive a data set name from its group and type."""
    return f"{group}_{type}".replace("-", "_")


def is_segment(text: str) -> bool:
    """Whether `text` is a valid data group or data type."""
    return _SEGMENT.fullmatch(text) is not None


def check_segment(kind: str, text: str) -> str:
    """Return `text` if it is a valid group or type, else raise ValueError."""
    if not is_segment(text):
        raise ValueError(
            f"{kind} {text!r} is not valid; use lower-case letters, digits and "
            "'-', starting with a letter or digit."
        )
    return text


def new_token() -> str:
    """Make a new random token value."""
    return _TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(value: str) -> bytes:
    """Hash a token value for storage and look-up.

    Issued tokens carry 256 random bits, so a fast hash is enough: there is
    nothing to guess from the digest.
    """
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()
