"""The store contract: every store must pass these (SQLite for now)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tallybook.datasets import ADMIN, READ, WRITE, DataSet, Token, hash_token
from tallybook.errors import (
    DataSetExists,
    DataSetNotFound,
    StoreError,
    TokenExists,
    TokenNotFound,
)
from tallybook.query import Query
from tallybook.records import Record
from tallybook.store import SQLiteStore, Store, open_store
from tallybook.timestamps import from_micros

Scenario = Callable[[Store], Awaitable[Any]]
DS = DataSet(group="g", type="t", auto_ids=("a", "b"), description="d")


@pytest.fixture
def make_store(blank_store: str) -> Callable[[], Store]:
    """Make a new (unopened) store object on the test's store."""
    return lambda: open_store(blank_store)


def run(make_store: Callable[[], Store], scenario: Scenario) -> Any:
    async def inside() -> Any:
        async with make_store() as store:
            return await scenario(store)

    return asyncio.run(inside())


def _token(*scopes: str, data_set: str | None = "g_t", name: str = "n") -> Token:
    return Token(frozenset(scopes), data_set, datetime.now(UTC), name, "tb_x")


def _record(record_id: str, day: int = 1, body: str = "{}") -> Record:
    return Record(record_id, day * 86_400_000_000, body)


EVERYTHING = Query()


async def _read(
    store: Store, data_set: DataSet, window: Query = EVERYTHING
) -> list[Any]:
    """The records in the window, parsed (stores may write JSON differently)."""
    return [json.loads(body) async for body in store.read(data_set, window)]


def test_store_data_set_round_trip(make_store: Callable[[], Store]) -> None:
    async def scenario(store: Store) -> Any:
        created = await store.create_data_set(DS)
        return created, await store.get_data_set("g_t"), await store.list_data_sets()

    created, found, listed = run(make_store, scenario)
    assert created == found == DS and created.id is not None
    assert listed == [DS]


def test_store_data_set_name_is_unique(make_store: Callable[[], Store]) -> None:
    async def scenario(store: Store) -> None:
        await store.create_data_set(DS)
        await store.create_data_set(DataSet(group="g", type="t"))

    with pytest.raises(DataSetExists):
        run(make_store, scenario)


def test_store_token_grant(make_store: Callable[[], Store]) -> None:
    entry = _token(READ, WRITE)

    async def scenario(store: Store) -> Any:
        await store.create_data_set(DS)
        await store.add_token(hash_token("x"), entry)
        return await store.find_grant(hash_token("x")), await store.find_grant(b"y")

    grant, missing = run(make_store, scenario)
    assert (grant.scopes, grant.data_set, missing) == ({READ, WRITE}, DS, None)


def test_store_token_for_missing_data_set(make_store: Callable[[], Store]) -> None:
    entry = _token(READ, data_set="nope_x")
    with pytest.raises(DataSetNotFound):
        run(make_store, lambda store: store.add_token(b"h", entry))


def test_store_write_upserts_and_reads_in_order(
    make_store: Callable[[], Store],
) -> None:
    async def scenario(store: Store) -> Any:
        ds = await store.create_data_set(DS)
        await store.write(ds, [_record("b", 2, '{"v":1}'), _record("a", 3)])
        await store.write(ds, [_record("b", 4, '{"v":2}')])
        return await _read(store, ds), await store.count(ds)

    assert run(make_store, scenario) == ([{}, {"v": 2}], 2)


def test_store_read_window(make_store: Callable[[], Store]) -> None:
    day = 86_400_000_000

    async def scenario(store: Store) -> Any:
        ds = await store.create_data_set(DS)
        await store.write(ds, [_record(str(i), i, f'"{i}"') for i in range(6)])
        return await _read(
            store, ds, Query(start=from_micros(day), end=from_micros(4 * day), limit=2)
        )

    assert run(make_store, scenario) == ["1", "2"]


def test_store_replace(make_store: Callable[[], Store]) -> None:
    async def scenario(store: Store) -> Any:
        ds = await store.create_data_set(DS)
        await store.write(ds, [_record("a"), _record("b")])
        count = await store.replace(ds, [_record("c")])
        return count, await _read(store, ds)

    assert run(make_store, scenario) == (1, [{}])


def test_store_failed_write_changes_nothing(make_store: Callable[[], Store]) -> None:
    ghost = DataSet(group="no", type="where", id=9999)

    async def scenario(store: Store) -> Any:
        ds = await store.create_data_set(DS)
        await store.write(ds, [_record("a")])
        with pytest.raises(StoreError):
            await store.replace(ghost, [_record("x")])
        return await store.count(ds)

    assert run(make_store, scenario) == 1


def test_store_writes_survive_reopening(make_store: Callable[[], Store]) -> None:
    async def write(store: Store) -> None:
        ds = await store.create_data_set(DS)
        await store.write(ds, [_record("a")])

    async def count(store: Store) -> int:
        ds = await store.get_data_set("g_t")
        assert ds is not None
        return await store.count(ds)

    run(make_store, write)
    assert run(make_store, count) == 1


def test_store_sqlite_concurrent_writes_share_commits(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "group.db")
    ghost = DataSet(group="no", type="where", id=9999)

    async def scenario() -> list[Any]:
        async with store:
            ds = await store.create_data_set(DS)
            before = store.commits
            writes = [store.write(ds, [_record(f"r{i}")]) for i in range(50)]
            writes.insert(25, store.write(ghost, [_record("x")]))
            outcomes = await asyncio.gather(*writes, return_exceptions=True)
            return [*outcomes, store.commits - before, await store.count(ds)]

    *outcomes, commits, count = asyncio.run(scenario())
    assert count == 50
    assert [type(o) for o in outcomes if o is not None] == [StoreError]
    assert commits < 51  # 51 jobs: some shared a commit


def test_store_orders_ids_by_code_point(make_store: Callable[[], Store]) -> None:
    async def scenario(store: Store) -> Any:
        ds = await store.create_data_set(DS)
        bodies = [_record(i, 1, json.dumps(i)) for i in ("b", "B", "_", "a", "é")]
        await store.write(ds, bodies)
        return await _read(store, ds)

    assert run(make_store, scenario) == ["B", "_", "a", "b", "é"]


def test_store_token_value_used_twice(make_store: Callable[[], Store]) -> None:
    entry = _token(READ)

    async def scenario(store: Store) -> None:
        await store.create_data_set(DS)
        await store.add_token(b"same", entry)
        await store.add_token(b"same", entry)

    with pytest.raises(TokenExists, match="in use already"):
        run(make_store, scenario)


def test_store_migrate_is_idempotent(make_store: Callable[[], Store]) -> None:
    asyncio.run(make_store().migrate())
    before, after = asyncio.run(make_store().migrate())
    assert before == after >= 1


def test_store_data_set_update_and_delete(make_store: Callable[[], Store]) -> None:
    schema = {"type": "object", "required": ["n"]}

    async def scenario(store: Store) -> Any:
        ds = await store.create_data_set(DS)
        await store.write(ds, [_record("a")])
        await store.add_token(b"h", _token(READ))
        changed = dataclasses.replace(ds, public=True, schema=schema, auto_ids=())
        updated = await store.update_data_set(changed)
        found = await store.get_data_set("g_t")
        await store.delete_data_set("g_t")
        gone = await store.get_data_set("g_t"), await store.find_grant(b"h")
        return updated, found, gone

    updated, found, gone = run(make_store, scenario)
    assert updated == found and found.schema == schema and found.public
    assert gone == (None, None)


def test_store_missing_data_set_update_and_delete(
    make_store: Callable[[], Store],
) -> None:
    async def scenario(store: Store) -> list[type[Exception]]:
        raised: list[type[Exception]] = []
        for action in (store.update_data_set(DS), store.delete_data_set("g_t")):
            try:
                await action
            except DataSetNotFound as exc:
                raised.append(type(exc))
        return raised

    assert run(make_store, scenario) == [DataSetNotFound, DataSetNotFound]


def test_store_tokens_listed_ended_and_touched(make_store: Callable[[], Store]) -> None:
    at = datetime(2030, 1, 1, tzinfo=UTC)

    async def scenario(store: Store) -> Any:
        await store.create_data_set(DS)
        first = await store.add_token(b"1", _token(READ, WRITE))
        admin = await store.add_token(b"2", _token(ADMIN, data_set=None))
        assert first.id is not None and admin.id is not None
        await store.touch_token(first.id, at)
        expiring = await store.end_token(first.id, at, revoke=False)
        revoked = await store.end_token(admin.id, at, revoke=True)
        return (
            expiring,
            revoked,
            await store.list_tokens("g_t"),
            await store.list_tokens(),
        )

    expiring, revoked, mine, every = run(make_store, scenario)
    assert (expiring.expires_at, expiring.last_used_at, revoked.revoked_at) == (at,) * 3
    assert [t.id for t in mine] == [expiring.id]
    assert [t.id for t in every] == [expiring.id, revoked.id]
    assert revoked.data_set_name is None and revoked.prefix == "tb_x"


def test_store_ending_missing_token(make_store: Callable[[], Store]) -> None:
    at = datetime.now(UTC)
    with pytest.raises(TokenNotFound):
        run(make_store, lambda store: store.end_token(999, at, revoke=True))


def test_store_freshness_follows_writes(make_store: Callable[[], Store]) -> None:
    async def scenario(store: Store) -> Any:
        ds = await store.create_data_set(DS)
        before = await store.freshness()
        await store.write(ds, [_record("a")])
        return before, await store.freshness()

    before, after = run(make_store, scenario)
    assert [f.last_updated for f in before] == [None]
    assert after[0].data_set == DS and after[0].last_updated is not None
    assert abs((datetime.now(UTC) - after[0].last_updated).total_seconds()) < 60


def test_store_ping(make_store: Callable[[], Store]) -> None:
    assert run(make_store, lambda store: store.ping()) is None
