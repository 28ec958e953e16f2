"""The command line: provisioning data sets and tokens."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import cli


def test_cli_create_prints_a_new_token_once(tmp_path: Path) -> None:
    store = str(tmp_path / "s.db")
    result = cli("datasets", "create", "my-group", "my-type", "--store", store)
    assert result.exit_code == 0
    tokens = re.findall(r"tb_[A-Za-z0-9_-]{43}", result.output)
    assert len(tokens) == 1
    assert "created data set my_group_my_type" in result.output


def test_cli_tokens_stored_only_as_hashes(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    cli("datasets", "create", "g", "t", "--token", "x" * 40, "--store", str(store))
    with sqlite3.connect(store) as db:
        dump = "\n".join(db.iterdump())
    assert "x" * 40 not in dump


def test_cli_import_short_token_warns(tmp_path: Path) -> None:
    result = cli("datasets", "create", "g", "t", "--token", "short",
                 "--store", str(tmp_path / "s.db"))  # fmt: skip
    assert result.exit_code == 0
    assert "warning: the imported token has 5 characters" in result.output
    assert "short" not in result.output.replace("5 characters", "")


def test_cli_create_twice_fails(tmp_path: Path) -> None:
    store = str(tmp_path / "s.db")
    cli("datasets", "create", "g", "t", "--store", store)
    result = cli("datasets", "create", "g", "t", "--store", store)
    assert result.exit_code == 1
    assert "the data set g_t exists already" in result.output


@pytest.mark.parametrize("group", ["Upper", "a.b", "sp ace", "under_score"])
def test_cli_create_refuses_bad_group(tmp_path: Path, group: str) -> None:
    result = cli("datasets", "create", group, "t", "--store", str(tmp_path / "s.db"))
    assert result.exit_code == 2
    assert "is not valid" in result.output


def test_cli_list_shows_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLYBOOK_STORE", str(tmp_path / "env.db"))
    cli("datasets", "create", "b-group", "t", "--public", "--auto-ids", "x, y")
    cli("datasets", "create", "a-group", "t")
    result = cli("datasets", "list")
    assert result.output.splitlines() == [
        "name\tgroup\ttype\tpublic\tauto_ids",
        "a_group_t\ta-group\tt\tno\t",
        "b_group_t\tb-group\tt\tyes\tx,y",
    ]


def test_cli_bad_setting_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLYBOOK_PORT", "eighty")
    result = cli("serve")
    assert result.exit_code == 2
    assert "TALLYBOOK_PORT must be a whole number" in result.output
