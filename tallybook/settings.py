"""Every setting of tallybook, its default and its help line.

Each setting can be given as a `TALLYBOOK_<NAME>` environment variable (for
example `TALLYBOOK_STORE`, `TALLYBOOK_MAX_BODY_BYTES`); flags of
`tallybook serve` override the environment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """The configuration of one tallybook service."""

    store: str = _setting(
        "tallybook.db",
        "Where records live: a SQLite file path, or a postgresql:// URL.",
    )
    pool_size: int = _setting(
        10, "Most PostgreSQL connections each server process opens."
    )
    workers: int = _setting(1, "Server processes (PostgreSQL only when above 1).")
    host: str = _setting("127.0.0.1", "Address to listen on.")
    port: int = _setting(8000, "TCP port to listen on.")
    max_body_bytes: int = _setting(
        16 * MIB, "Largest request body accepted, as sent (compressed or not)."
    )
    max_decoded_bytes: int = _setting(
        64 * MIB, "Largest body accepted after gzip or deflate decoding."
    )
    max_records: int = _setting(100_000, "Most records accepted in one request.")
    max_keys: int = _setting(256, "Most keys accepted in one record.")
    max_key_length: int = _setting(128, "Longest key name accepted, in characters.")
    max_string_length: int = _setting(
        65_536, "Longest string value accepted, in characters."
    )
    max_id_length: int = _setting(512, "Longest `_id` accepted, in characters.")
    header_timeout: int = _setting(
        10,
        "Seconds a client may take to send a request's headers, counted from "
        "when it connects or starts the request.",
    )
    body_timeout: int = _setting(
        30, "Seconds a client may pause while sending a request body."
    )
    send_timeout: int = _setting(
        30,
        "Seconds a client may leave an answer unread (the server's send buffer "
        "full) before the connection is closed.",
    )
    rate_limit_token: int = _setting(
        0, "Most requests per window with one token (429 beyond); 0 for no limit."
    )
    rate_limit_address: int = _setting(
        0, "Most requests per window from one client address; 0 for no limit."
    )
    rate_limit_window: int = _setting(
        60, "Seconds in a rate-limit window, counted from a key's first request."
    )
    rate_limit_redis: str = field(
        default="",
        repr=False,  # it may carry a password
        metadata={
            "help": "A redis:// URL where server processes share rate-limit "
            "counts; needed when rate limits are on and workers > 1."
        },
    )
    rate_limit_prefix: str = _setting(
        "tallybook:ratelimit",
        "Prefix of the rate-limit keys in Redis, to share one Redis between "
        "deployments.",
    )
    parse_workers: int = _setting(
        1, "Helper processes that parse large bodies; 0 parses in the server."
    )
    parse_offload_bytes: int = _setting(
        32 * 1024, "Bodies at least this large are parsed in a helper process."
    )
    public_max_age: int = _setting(
        60, "Seconds caches may keep reads of public data sets (Cache-Control)."
    )
    log_level: str = _setting("INFO", "Logging level of `serve`.")
    log_format: str = _setting(
        "text", "Log lines as `text` or `json` (one object each)."
    )
    admin_token: str = field(
        default="",
        repr=False,
        metadata={"help": "An admin token to import at start-up if it is unknown."},
    )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Build settings from `TALLYBOOK_*` variables, then `overrides`.

        Overrides whose value is None are ignored, so unset CLI flags fall
        back to the environment and then to the defaults.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            raw = environ.get("TALLYBOOK_" + item.name.upper())
            if raw is not None:
                values[item.name] = _convert(item.name, raw, type(item.default))
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        if settings.log_format not in ("text", "json"):
            shown = settings.log_format[:20]
            message = f"TALLYBOOK_LOG_FORMAT must be text or json, not {shown!r}."
            raise ValueError(message)
        return settings

    @classmethod
    def help_lines(cls) -> dict[str, str]:
        """Map each setting name to its help line."""
        return {item.name: item.metadata["help"] for item in dataclasses.fields(cls)}


def _convert(name: str, raw: str, kind: type) -> Any:
    if kind is not int:
        return raw
    try:
        return int(raw)
    except ValueError:
        variable = "TALLYBOOK_" + name.upper()
        raise ValueError(f"{variable} must be a whole number, not {raw!r}.") from None
