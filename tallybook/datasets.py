"""Data sets and tokens: names, rules and secrets (no I/O)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tallybook.summaries import Summary

_SEGMENT = re.compile(r"[a-z0-9][a-z0-9-]*", re.ASCII)
NAME_PATTERN = "[a-z0-9][a-z0-9_]*_[a-z0-9_]*"
_TOKEN_PREFIX = "tb_"
TOKEN_BYTES = 32  # 256 bits of randomness, as DESIGN.md requires

READ = "read"
WRITE = "write"
ADMIN = "admin"
SCOPES = frozenset((READ, WRITE, ADMIN))
PREFIX_LENGTH = 8  # characters of a token kept to recognise it in lists


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
        schema: a JSON Schema each record must match, if any.
        summary: the fields per-hour totals are kept for, if any.
        id: the store's key for it, once stored.
    """

    group: str
    type: str
    auto_ids: tuple[str, ...] = ()
    public: bool = False
    description: str = ""
    max_age_expected: int | None = None
    schema: dict[str, Any] | None = field(default=None, hash=False)
    summary: Summary | None = None
    id: int | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """The data set name: `<group>_<type>` with `-` made `_`."""
        return data_set_name(self.group, self.type)


@dataclass(frozen=True)
class Token:
    """A token as the store knows it: never its value, only what it grants.

    Attributes:
        scopes: any of `read`, `write`, `admin`.
        data_set_name: the data set it belongs to; None for admin tokens.
        created_at: when it was issued or imported.
        name: a label for people.
        prefix: its first characters, to recognise it in lists.
        expires_at: when it stops working, if ever.
        revoked_at: when it was revoked, if it was.
        last_used_at: when it was last used (to the minute).
        id: the store's key for it, once stored.
    """

    scopes: frozenset[str]
    data_set_name: str | None
    created_at: datetime
    name: str = ""
    prefix: str = ""
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    id: int | None = None

    def is_active(self, now: datetime) -> bool:
        """Whether the token may be used at `now`."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.expires_at is None or now < self.expires_at


@dataclass(frozen=True)
class Grant:
    """What a presented token allows, as found in the store.

    Attributes:
        token: the token's record.
        data_set: the data set the token belongs to; None for admin tokens.
    """

    token: Token
    data_set: DataSet | None

    @property
    def scopes(self) -> frozenset[str]:
        """The token's scopes."""
        return self.token.scopes

    def is_active(self, now: datetime) -> bool:
        """Whether the token may be used at `now`."""
        return self.token.is_active(now)

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


def check_scopes(scopes: frozenset[str], data_set_name: str | None) -> None:
    """Refuse scope sets that cannot work: raise ValueError saying why."""
    unknown = scopes - SCOPES
    if unknown:
        raise ValueError(
            f"unknown scope {sorted(unknown)[0]!r}; use read, write or admin."
        )
    if not scopes:
        raise ValueError("a token needs at least one scope: read, write or admin.")
    if ADMIN not in scopes and data_set_name is None:
        raise ValueError("a read or write token needs a data set.")


def token_prefix(value: str) -> str:
    """The part of a token shown in lists: enough to recognise, not to use.

    At most a quarter of the value, so that a short imported token is never
    shown whole.
    """
    return value[: min(PREFIX_LENGTH, len(value) // 4)]


def hash_token(value: str) -> bytes:
    """Hash a token value for storage and look-up.

    Issued tokens carry 256 random bits, so a fast hash is enough: there is
    nothing to guess from the digest.
    """
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()
