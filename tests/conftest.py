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

CASES_FILE = Path(__file__).parent / "cases" / "write-api-cases.json"
CASES: dict[str, Any] = json.loads(CASES_FILE.read_text())
FIXTURES: list[dict[str, str]] = CASES["fixtures"]
TOKENS = {fixture["name"]: fixture["token"] for fixture in FIXTURES}
ALPHA = TOKENS["test_group_test_type"]
JSON = {"Content-Type": "application/json"}


def cli(*args: str) -> Any:
    """Run a tallybook command in-process; return click's result."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def provision(store: Path) -> None:
    """Create the fixture data sets of the cases file, with their tokens."""
    for fixture in FIXTURES:
        result = cli(
            "datasets", "create", fixture["group"], fixture["type"],
            "--token", fixture["token"], "--store", str(store),
        )  # fmt: skip
        assert result.exit_code == 0, result.output


def auth(token: str = ALPHA) -> dict[str, str]:
    """Headers of a JSON write with this token."""
    return {"Authorization": f"Bearer {token}", **JSON}


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "tallybook.db"
    provision(path)
    return path


@pytest.fixture
def settings(store_path: Path) -> Settings:
    return Settings(store=str(store_path))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def server(store_path: Path, tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(store_path, tmp_path / "server.log") as live:
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
def limited(store_path: Path) -> Iterator[Any]:
    """Make a client whose app has some settings changed."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        app = create_app(Settings(store=str(store_path), **overrides))
        clients.append(TestClient(app).__enter__())
        return clients[-1]

    yield make
    for made in clients:
        made.__exit__(None, None, None)
