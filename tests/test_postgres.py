"""PostgreSQL only: schema checks, many processes, lost connections."""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx2 as httpx
import pytest

from tallybook.errors import SchemaMismatch
from tallybook.store import PostgresStore
from tests.conftest import ALPHA, cli, provision
from tests.server import LiveServer
from tests.stores import POSTGRES, _execute, postgres_schema, require_postgres

PATH = "/data/test-group/test-type"
HEADERS = {"Authorization": f"Bearer {ALPHA}"}


def test_postgres_serve_refuses_a_database_without_schema() -> None:
    with postgres_schema(migrated=False) as url:
        result = cli("serve", "--store", url)
    assert result.exit_code == 1
    assert "has no tallybook schema" in result.output
    assert "Run `tallybook migrate --store URL` first." in result.output


def test_postgres_migrate_command() -> None:
    with postgres_schema(migrated=False) as url:
        first = cli("migrate", "--store", url)
        second = cli("migrate", "--store", url)
    assert first.output == "the schema went from version 0 to 2\n"
    assert second.output == "the schema is up to date (version 2)\n"


def test_postgres_newer_schema_refused() -> None:
    with postgres_schema() as url:
        asyncio.run(_execute("UPDATE tallybook_schema SET version = 99", url))
        with pytest.raises(SchemaMismatch, match="newer than this tallybook"):
            asyncio.run(PostgresStore(url).open())
        assert cli("migrate", "--store", url).exit_code == 1


def _writer(
    url: str,
    name: str,
    ids: list[str],
    failures: list[str],
    rounds: int = 3,
    stop: threading.Event | None = None,
) -> None:
    """Rewrite the ids in batches of 7, moving them an hour each round."""
    with httpx.Client(base_url=url, headers=HEADERS) as client:
        for round_ in range(rounds):
            if stop is not None and stop.is_set():
                return
            batch = [
                {"_id": record_id, "_timestamp": f"2014-01-06T0{round_ % 5}:30:00Z",
                 "writer": name, "echo": name, "round": round_}
                for record_id in ids
            ]  # fmt: skip
            for start in range(0, len(batch), 7):
                answer = client.post(PATH, json=batch[start : start + 7])
                if answer.status_code != 200:
                    failures.append(answer.text)


@pytest.fixture
def pg_store() -> Iterator[str]:
    """A PostgreSQL store holding the cases file's data sets."""
    with postgres_schema() as url:
        provision(url)
        yield url


def test_postgres_two_servers_race_on_one_data_set(
    pg_store: str, tmp_path: Path
) -> None:
    store = pg_store
    shared = [f"shared-{i}" for i in range(60)]
    with (
        LiveServer(store, tmp_path / "a.log") as one,
        LiveServer(store, tmp_path / "b.log") as two,
    ):
        failures: list[str] = []
        plans = [
            (one.url, "A", shared),
            (two.url, "B", shared[::-1]),
            (one.url, "C", ["c-1", "c-2"]),
            (two.url, "D", ["d-1"]),
        ]
        writers = [
            threading.Thread(target=_writer, args=(*plan, failures)) for plan in plans
        ]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(timeout=60)
        data = httpx.get(one.url + PATH, headers=HEADERS).json()["data"]

    assert failures == []
    assert sorted(r["_id"] for r in data) == sorted([*shared, "c-1", "c-2", "d-1"])
    assert all(r["writer"] == r["echo"] for r in data)
    assert {r["round"] for r in data} == {2}


def test_postgres_summary_stays_right_under_racing_writers(
    pg_store: str, tmp_path: Path
) -> None:
    """Two servers write over the same ids while the summary keeps changing."""
    shared = [f"shared-{i}" for i in range(40)]
    settings = ["writer:round", "echo:round", ":round", "writer,echo:round"] * 2
    stop = threading.Event()
    with (
        LiveServer(pg_store, tmp_path / "a.log") as one,
        LiveServer(pg_store, tmp_path / "b.log") as two,
    ):
        failures: list[str] = []
        plans = [(one.url, "A", shared), (two.url, "B", shared[::-1])]
        writers = [
            threading.Thread(target=_writer, args=(*plan, failures, 500, stop))
            for plan in plans
        ]
        for writer in writers:
            writer.start()
        for summary in settings:
            result = cli("datasets", "update", "test_group_test_type",
                         "--summary", summary, "--store", pg_store)  # fmt: skip
            assert result.exit_code == 0, result.output
        stop.set()
        for writer in writers:
            writer.join(timeout=60)
        query = "group_by=writer&period=hour&collect=round:sum&collect=round:count"
        window = "start_at=2014-01-06T00:00:0{}Z&end_at=2014-01-07T00:00:00Z"
        answers = [
            httpx.get(f"{one.url}{PATH}?{query}&{window.format(second)}",
                      headers=HEADERS).json()["data"]
            for second in (0, 1)
        ]  # fmt: skip
        metrics = httpx.get(one.url + "/metrics").text

    assert failures == []
    assert 'tallybook_aggregate_reads_total{source="summary"} 1.0' in metrics
    assert answers[0] == answers[1]
    assert sum(row["_count"] for row in answers[0]) == 40


@pytest.fixture
def own_database(tmp_path: Path) -> Iterator[str]:
    """A whole database of its own, so the test may refuse connections to it."""
    require_postgres()
    name = "tb_" + uuid.uuid4().hex[:12]
    asyncio.run(_execute(f"CREATE DATABASE {name}"))
    url = POSTGRES.rsplit("/", 1)[0] + "/" + name
    try:
        assert cli("migrate", "--store", url).exit_code == 0
        provision(url)
        yield url
    finally:
        asyncio.run(_allow(name, True))
        asyncio.run(_execute(f"DROP DATABASE {name} WITH (FORCE)"))


async def _allow(name: str, allowed: bool) -> None:
    connection = await asyncpg.connect(POSTGRES)
    try:
        await connection.execute(
            f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {str(allowed).lower()}"
        )
        if not allowed:
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1",
                name,
            )
    finally:
        await connection.close()


def _post(server: LiveServer, record_id: str) -> Any:
    record = {"_id": record_id, "_timestamp": "2014-01-06T00:00:00Z"}
    return httpx.post(server.url + PATH, json=record, headers=HEADERS, timeout=30)


def test_postgres_lost_database_answers_503_then_recovers(
    own_database: str, tmp_path: Path
) -> None:
    name = own_database.rsplit("/", 1)[1]
    with LiveServer(own_database, tmp_path / "server.log") as server:
        assert _post(server, "before").status_code == 200

        asyncio.run(_allow(name, False))
        refused = _post(server, "during")
        asyncio.run(_allow(name, True))
        recovered = _post(server, "after")
        data = httpx.get(server.url + PATH, headers=HEADERS).json()["data"]

    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["status"] == "error"
    assert recovered.status_code == 200
    assert [r["_id"] for r in data] == ["after", "before"]


def test_postgres_workers_share_one_port(pg_store: str, tmp_path: Path) -> None:
    with LiveServer(pg_store, tmp_path / "w.log", "--workers", "2") as server:
        answers = [_post(server, f"w{i}").status_code for i in range(40)]
        count = len(httpx.get(server.url + PATH, headers=HEADERS).json()["data"])
    started = re.findall(r"Started server process \[(\d+)\]", server.log.read_text())
    assert (answers, count) == ([200] * 40, 40)
    assert len(set(started)) == 2


def test_postgres_sqlite_refuses_several_workers(tmp_path: Path) -> None:
    result = cli("serve", "--workers", "2", "--store", str(tmp_path / "s.db"))
    assert result.exit_code == 2
    assert "Several workers need the PostgreSQL store" in result.output
