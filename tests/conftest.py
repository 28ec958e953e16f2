"""Shared fixtures: an app on its own temporary store, and a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from tallybook import create_app
from tallybook.cli import main
from tallybook.settings import Settings
from tests.server import LiveServer
from tests.stores import postgres_schema

CASES_FILE = Path(__file__).parent / "cases" / "write-api-cases.json"
CASES: dict[str, Any] = json.loads(CASES_FILE.read_text())
FIXTURES: list[dict[str, str]] = CASES["fixtures"]
TOKENS = {fixture["name"]: fixture["token"] for fixture in FIXTURES}
ALPHA = TOKENS["test_group_test_type"]
JSON = {"Content-Type": "application/json"}


def cli(*args: str, input: str | None = None) -> Any:
    """Run a tallybook command in-process; return click's result."""
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def provision(store: str) -> None:
    """Create the fixture data sets of the cases file, with their tokens."""
    for fixture in FIXTURES:
        result = cli(
            "datasets", "create", fixture["group"], fixture["type"],
            "--token", fixture["token"], "--store", store,
        )  # fmt: skip
        assert result.exit_code == 0, result.output


def auth(token: str = ALPHA) -> dict[str, str]:
    """Headers of a JSON write with this token."""
    return {"Authorization": f"Bearer {token}", **JSON}


@pytest.fixture(params=["sqlite", "postgres"])
def blank_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store of each kind, ready to serve: its location."""
    if request.param == "sqlite":
        yield str(tmp_path / "tallybook.db")
        return
    with postgres_schema() as url:
        yield url


@pytest.fixture
def store(blank_store: str) -> str:
    """A store of each kind holding the cases file's data sets."""
    provision(blank_store)
    return blank_store


@pytest.fixture
def settings(store: str) -> Settings:
    return Settings(store=store)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def server(store: str, tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(store, tmp_path / "server.log") as live:
        yield live


def stored(client: TestClient, name: str) -> list[dict[str, Any]]:
    """Read a fixture data set back through the API."""
    group, type_ = next((f["group"], f["type"]) for f in FIXTURES if f["name"] == name)
    answer = client.get(
        f"/data/{group}/{type_}", headers={"Authorization": f"Bearer {TOKENS[name]}"}
    )
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


@pytest.fixture
def limited(store: str) -> Iterator[Any]:
    """Make a client whose app has some settings changed."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        app = create_app(Settings(store=store, **overrides))
        clients.append(TestClient(app).__enter__())
        return clients[-1]

    yield make
    for made in clients:
        made.__exit__(None, None, None)
