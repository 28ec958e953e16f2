"""The interface every store implements.

A store keeps data sets, the hashes of their tokens, and records. Writes are
all-or-nothing per call and return only once durable.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tallybook import summaries
from tallybook.datasets import DataSet, Grant, Token
from tallybook.errors import StoreError
from tallybook.query import Query
from tallybook.records import Record


@dataclass(frozen=True)
class Bucket:
    """The records of one group (and one period) of an aggregate read.

    Attributes:
        group: the values of the query's group_by fields.
        start: the start of the period, when grouping by period.
        count: how many records.
        collected: one value per `collect` of the query: a sum, a mean, a
            count, or a list of distinct values.
        non_numbers: per `collect`, how many values were not numbers.
        numbers: per `collect`, how many values were numbers.
    """

    group: tuple[Any, ...]
    start: datetime | None
    count: int
    collected: tuple[Any, ...]
    non_numbers: tuple[int, ...]
    numbers: tuple[int, ...]


@dataclass(frozen=True)
class Aggregation:
    """The answer of `Store.aggregate`.

    Attributes:
        buckets: one per group (and period) holding records.
        from_summary: whether the data set's summary answered, not its records.
    """

    buckets: list[Bucket]
    from_summary: bool = False


@dataclass(frozen=True)
class Freshness:
    """When a data set was last written to.

    Attributes:
        data_set: the data set.
        last_updated: the latest write of any of its records; None if empty.
    """

    data_set: DataSet
    last_updated: datetime | None


class Store(ABC):
    """Storage of data sets, tokens and records."""

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @abstractmethod
    async def open(self) -> None:
        """Connect, and create or check the schema."""

    @abstractmethod
    async def migrate(self) -> tuple[int, int]:
        """Create or upgrade the schema; return the versions before and after."""

    @abstractmethod
    async def close(self) -> None:
        """Finish pending writes and release every connection."""

    @abstractmethod
    async def ping(self) -> None:
        """Return if the store answers; raise StoreUnavailable otherwise."""

    @abstractmethod
    async def create_data_set(self, data_set: DataSet) -> DataSet:
        """Store a new data set and return it with its id.

        Raises:
            DataSetExists: the name is taken.
        """

    @abstractmethod
    async def get_data_set(self, name: str) -> DataSet | None:
        """Return the data set with this name, if any."""

    @abstractmethod
    async def list_data_sets(self) -> list[DataSet]:
        """Return every data set, ordered by name."""

    @abstractmethod
    async def update_data_set(self, data_set: DataSet) -> DataSet:
        """Replace the settings of the data set with this name.

        Raises:
            DataSetNotFound: no data set has the name.
        """

    @abstractmethod
    async def delete_data_set(self, name: str) -> None:
        """Delete a data set with its records and tokens.

        Raises:
            DataSetNotFound: no data set has the name.
        """

    @abstractmethod
    async def freshness(self) -> list[Freshness]:
        """Return when each data set was last written to, ordered by name."""

    @abstractmethod
    async def add_token(self, token_hash: bytes, token: Token) -> Token:
        """Store a token under the hash of its value; return it with its id.

        Raises:
            DataSetNotFound: its data set does not exist.
            TokenExists: the same value is stored already.
        """

    @abstractmethod
    async def find_grant(self, token_hash: bytes) -> Grant | None:
        """Return what the token with this hash grants, if it is known."""

    @abstractmethod
    async def list_tokens(self, data_set_name: str | None = None) -> list[Token]:
        """Return the tokens of one data set (or all), oldest first."""

    @abstractmethod
    async def get_token(self, token_id: int) -> Token | None:
        """Return the token with this id, if any."""

    @abstractmethod
    async def end_token(self, token_id: int, at: datetime, *, revoke: bool) -> Token:
        """Make a token stop working at `at`: revoke it, or set its expiry.

        Raises:
            TokenNotFound: no token has the id.
        """

    @abstractmethod
    async def touch_token(self, token_id: int, at: datetime) -> None:
        """Record that the token was used at `at`."""

    @abstractmethod
    async def write(self, data_set: DataSet, records: Sequence[Record]) -> None:
        """Insert or replace records by `_id`, all in one transaction."""

    @abstractmethod
    async def replace(self, data_set: DataSet, records: Sequence[Record]) -> int:
        """Replace the whole content of a data set; return its new count."""

    @abstractmethod
    async def count(self, data_set: DataSet) -> int:
        """Return how many records the data set holds."""

    def counters(self) -> dict[str, tuple[str, float]]:
        """The store's own counters for /metrics: name -> (help, value)."""
        return {}

    @abstractmethod
    def read(self, data_set: DataSet, query: Query) -> AsyncIterator[str]:
        """Yield the JSON text of each record the query selects, in its order.

        Without `sort_by`, records come in `_timestamp`, then `_id` order.
        """

    @abstractmethod
    async def aggregate(
        self, data_set: DataSet, query: Query, *, by_period: bool
    ) -> Aggregation:
        """Count and collect the selected records per group (and period).

        When the data set's summary serves the query, the store may answer
        from it; the buckets are the same either way.
        """


def stored_id(data_set: DataSet) -> int:
    """The store's key of a data set read from the store."""
    if data_set.id is None:
        raise StoreError(f"the data set {data_set.name} has no id; it is not stored")
    return data_set.id


def data_set_from_row(
    row: Sequence[Any], auto_ids: Callable[[Any], Sequence[str]]
) -> DataSet:
    """A data set from the columns every store selects, in their order."""
    data_set_id, group, type_, fields, public, description, max_age, schema = row[:8]
    return DataSet(
        group=group,
        type=type_,
        auto_ids=tuple(auto_ids(fields)),
        public=bool(public),
        description=description,
        max_age_expected=max_age,
        schema=None if schema is None else json.loads(schema),
        summary=summaries.parse(row[8]),
        id=data_set_id,
    )


def token_from_row(
    row: Sequence[Any], moment: Callable[[Any], datetime | None]
) -> Token:
    """A token from the columns every store selects, in their order."""
    token_id, scopes, data_set_name, created, name, prefix = row[:6]
    expires, revoked, used = row[6:]
    created_at = moment(created)
    assert created_at is not None
    return Token(
        scopes=frozenset(scopes.split(",")),
        data_set_name=data_set_name,
        created_at=created_at,
        name=name,
        prefix=prefix,
        expires_at=moment(expires),
        revoked_at=moment(revoked),
        last_used_at=moment(used),
        id=token_id,
    )
