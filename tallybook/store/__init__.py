"""Stores: where records, data sets and token hashes live."""

from __future__ import annotations

from tallybook.store.base import Aggregation, Bucket, Freshness, Store
from tallybook.store.postgres import PostgresStore
from tallybook.store.sqlite import SQLiteStore

__all__ = [
    "Aggregation",
    "Bucket",
    "Freshness",
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "TokenEntry",
    "Window",
    "open_store",
]


def open_store(location: str, *, pool_size: int = 10) -> Store:
    """Make the store that `location` names (it is opened by the caller).

    A `postgresql://` (or `postgres://`) URL names a PostgreSQL database,
    reached with a pool of at most `pool_size` connections; a plain path, or
    a `sqlite:///path` URL, names a SQLite file.

    Raises:
        ValueError: the location names a store this version cannot use.
    """
    if location.startswith(("postgresql://", "postgres://")):
        return PostgresStore(location, pool_size=pool_size)
    if location.startswith("sqlite:///"):
        return SQLiteStore(location.removeprefix("sqlite:///"))
    if "://" in location:
        scheme = location.split("://", 1)[0]
        raise ValueError(
            f"Stores of the kind {scheme!r} are not supported; give a SQLite file path."
        )
    return SQLiteStore(location)
