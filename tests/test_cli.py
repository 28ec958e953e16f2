"""The command line, every command, on both stores."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tallybook import Settings, create_app
from tests.conftest import cli

TOKEN = re.compile(r"tb_[A-Za-z0-9_-]{43}")


def _create(store: str, *extra: str) -> str:
    result = cli("datasets", "create", "g", "t", "--store", store, *extra)
    assert result.exit_code == 0, result.output
    output: str = result.output
    return output


def test_cli_create_prints_a_new_token_once(blank_store: str) -> None:
    output = _create(blank_store)
    assert len(TOKEN.findall(output)) == 1
    assert output.startswith("created data set g_t\ntoken (shown once")


def test_cli_tokens_stored_only_as_hashes(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    _create(str(store), "--token", "x" * 40)
    with sqlite3.connect(store) as db:
        dump = "\n".join(db.iterdump())
    assert "x" * 40 not in dump


def test_cli_import_short_token_warns(blank_store: str) -> None:
    output = _create(blank_store, "--token", "short")
    assert "warning: the imported token has 5 characters" in output
    assert "short" not in output.replace("5 characters", "")


def test_cli_create_twice_fails(blank_store: str) -> None:
    _create(blank_store)
    result = cli("datasets", "create", "g", "t", "--store", blank_store)
    assert result.exit_code == 1
    assert "the data set g_t exists already" in result.output


@pytest.mark.parametrize("group", ["Upper", "a.b", "sp ace", "under_score"])
def test_cli_create_refuses_bad_group(tmp_path: Path, group: str) -> None:
    result = cli("datasets", "create", group, "t", "--store", str(tmp_path / "s.db"))
    assert result.exit_code == 2
    assert "is not valid" in result.output


def test_cli_list_shows_settings(
    blank_store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TALLYBOOK_STORE", blank_store)
    cli("datasets", "create", "b-group", "t", "--public", "--auto-ids", "x, y")
    cli("datasets", "create", "a-group", "t")
    result = cli("datasets", "list")
    assert result.output.splitlines() == [
        "name\tgroup\ttype\tpublic\tauto_ids",
        "a_group_t\ta-group\tt\tno\t",
        "b_group_t\tb-group\tt\tyes\tx,y",
    ]
    as_json = json.loads(cli("datasets", "list", "--json").output)
    assert [item["name"] for item in as_json] == ["a_group_t", "b_group_t"]


def test_cli_show_and_update(blank_store: str, tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "required": ["n"]}')
    _create(blank_store, "--description", "first")
    result = cli("datasets", "update", "g_t", "--description", "second", "--public",
                 "--schema", str(schema), "--max-age-expected", "60",
                 "--summary", "channel,region:count",
                 "--store", blank_store)  # fmt: skip
    shown = json.loads(cli("datasets", "show", "g_t", "--store", blank_store).output)
    assert result.exit_code == 0 and json.loads(result.output) == shown
    assert shown == {
        "name": "g_t", "group": "g", "type": "t", "description": "second",
        "public": True, "auto_ids": [], "max_age_expected": 60,
        "schema": {"type": "object", "required": ["n"]},
        "summary": {"group_by": ["channel", "region"], "collect": ["count"]},
    }  # fmt: skip
    cleared = cli("datasets", "update", "g_t", "--no-schema", "--no-max-age",
                  "--no-summary", "--private", "--store", blank_store)  # fmt: skip
    settings = json.loads(cleared.output)
    assert (settings["schema"], settings["max_age_expected"]) == (None, None)
    assert settings["summary"] is None


def test_cli_refuses_a_bad_summary(blank_store: str) -> None:
    result = cli("datasets", "create", "g", "t", "--summary", "_id:count",
                 "--store", blank_store)  # fmt: skip
    assert result.exit_code == 2
    assert "summary group_by field '_id' is not a field name" in result.output


def test_cli_update_refuses_bad_schema(blank_store: str, tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": 5}')
    _create(blank_store)
    result = cli("datasets", "update", "g_t", "--schema", str(schema),
                 "--store", blank_store)  # fmt: skip
    assert result.exit_code == 2
    assert "schema is not a valid JSON Schema" in result.output


def test_cli_show_missing_data_set(blank_store: str) -> None:
    result = cli("datasets", "show", "no_such", "--store", blank_store)
    assert (result.exit_code, result.output) == (
        1, "Error: no data set is named no_such\n",
    )  # fmt: skip


def test_cli_delete_needs_confirmation(blank_store: str) -> None:
    _create(blank_store)
    refused = cli("datasets", "delete", "g_t", "--store", blank_store)
    done = cli("datasets", "delete", "g_t", "--yes", "--store", blank_store)
    assert refused.exit_code == 2 and "add --yes to confirm" in refused.output
    assert (done.exit_code, done.output) == (0, "deleted data set g_t\n")
    assert cli("datasets", "show", "g_t", "--store", blank_store).exit_code == 1


def test_cli_empty(blank_store: str) -> None:
    token = TOKEN.findall(_create(blank_store))[0]
    with TestClient(create_app(Settings(store=blank_store))) as client:
        record = {"_timestamp": "2014-01-06T00:00:00Z"}
        client.post(
            "/data/g/t", json=record, headers={"Authorization": f"Bearer {token}"}
        )
    result = cli("datasets", "empty", "g_t", "--store", blank_store)
    assert (result.exit_code, result.output) == (0, "g_t now contains 0 records\n")


def test_cli_tokens_issue_list_revoke(blank_store: str) -> None:
    _create(blank_store)
    issued = cli("tokens", "issue", "--data-set", "g_t", "--scope", "read",
                 "--name", "dash", "--store", blank_store)  # fmt: skip
    admin = cli("tokens", "issue", "--admin", "--store", blank_store)
    assert issued.output.startswith("issued token 2 (read on g_t)\n")
    assert admin.output.startswith("issued token 3 (admin on all data sets)\n")
    revoked = cli("tokens", "revoke", "2", "--store", blank_store)
    listed = json.loads(cli("tokens", "list", "--json", "--store", blank_store).output)
    assert revoked.output == "revoked token 2\n"
    assert [(t["id"], t["name"], t["revoked_at"] is not None) for t in listed] == [
        (1, "", False), (2, "dash", True), (3, "", False),
    ]  # fmt: skip
    table = cli("tokens", "list", "--data-set", "g_t", "--store", blank_store).output
    assert table.splitlines()[0].startswith("id\tprefix\tdata_set\tscopes")
    assert len(table.splitlines()) == 3 and TOKEN.search(table) is None


def test_cli_tokens_import_from_stdin(blank_store: str) -> None:
    _create(blank_store)
    value = "imported-" + "v" * 40 + "\n"
    result = cli("tokens", "import", "--data-set", "g_t", "--store", blank_store,
                 input=value)  # fmt: skip
    assert result.output == "imported token 2 (read, write on g_t)\n"


def test_cli_tokens_rotate(blank_store: str) -> None:
    _create(blank_store)
    result = cli("tokens", "rotate", "1", "--grace", "60", "--store", blank_store)
    assert result.output.startswith("issued token 2; token 1 stops at ")
    assert len(TOKEN.findall(result.output)) == 1
    missing = cli("tokens", "rotate", "9", "--store", blank_store)
    assert (missing.exit_code, missing.output) == (1, "Error: no token has the id 9\n")


def test_cli_tokens_issue_refuses_scope_without_data_set(blank_store: str) -> None:
    result = cli("tokens", "issue", "--scope", "read", "--store", blank_store)
    assert result.exit_code == 2
    assert "a read or write token needs a data set" in result.output


def test_cli_migrate(blank_store: str) -> None:
    result = cli("migrate", "--store", blank_store)
    assert result.exit_code == 0
    assert result.output.startswith(("the schema is up to date", "the schema went"))


def test_cli_bad_setting_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLYBOOK_PORT", "eighty")
    result = cli("serve")
    assert result.exit_code == 2
    assert "TALLYBOOK_PORT must be a whole number" in result.output
