"""`tallybook send` and `tallybook read` against a real server."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tallybook.cli_client import _Progress
from tests.conftest import ALPHA, cli
from tests.server import LiveServer, free_port

PATH = "/data/test-group/test-type"
DAY = "2014-01-06T00:00:00Z"


def _stored(server: LiveServer) -> list[dict[str, Any]]:
    answer = httpx.get(server.url + PATH, headers={"Authorization": f"Bearer {ALPHA}"})
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


def _send(server: LiveServer, path: Path, *extra: str, token: str = ALPHA) -> Any:
    return cli("send", server.url + PATH, str(path), "--token", token, *extra)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_send_json_array(server: LiveServer, tmp_path: Path) -> None:
    body = [{"_id": f"j{i}", "_timestamp": DAY, "n": i} for i in range(5)]
    result = _send(server, _write(tmp_path, "r.json", json.dumps(body)))
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"sent 5 records to {server.url}{PATH} in ")
    assert "\r" not in result.output
    assert [r["n"] for r in _stored(server)] == [0, 1, 2, 3, 4]


def test_send_json_object(server: LiveServer, tmp_path: Path) -> None:
    path = _write(
        tmp_path, "one.json", '{"_id": "o", "_timestamp": "2014-01-06T00:00:00Z"}'
    )
    assert _send(server, path).exit_code == 0
    assert [r["_id"] for r in _stored(server)] == ["o"]


def test_send_ndjson(server: LiveServer, tmp_path: Path) -> None:
    lines = "\n".join(json.dumps({"_id": f"n{i}", "_timestamp": DAY}) for i in range(3))
    assert _send(server, _write(tmp_path, "r.ndjson", lines + "\n\n")).exit_code == 0
    assert len(_stored(server)) == 3


def test_send_csv_types(server: LiveServer, tmp_path: Path) -> None:
    text = "_id,_timestamp,count,rate,note,gap\nc1,2014-01-06T00:00:00Z,12,0.5,007x,\n"
    assert _send(server, _write(tmp_path, "r.csv", text)).exit_code == 0
    [record] = _stored(server)
    assert (record["count"], record["rate"], record["note"], record["gap"]) == (
        12, 0.5, "007x", None,
    )  # fmt: skip


def test_send_stdin_with_backdrop_send_flags(server: LiveServer) -> None:
    text = json.dumps([{"_id": "s", "_timestamp": DAY}])
    result = cli("send", "--url", server.url + PATH, "--token", ALPHA, "--timeout", "5",
                 "--attempts", "3", "--failfast", input=text)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [r["_id"] for r in _stored(server)] == ["s"]


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        pytest.param("bad.ndjson", '{"_timestamp": "2014-01-06T00:00:00Z"}\n' * 3
                     + '{"_timestamp": "2014-13-06T00:00:00Z"}\n', "line 4: record 3:",
                     id="ndjson"),
        pytest.param("bad.csv", "_timestamp,n\n2014-01-06T00:00:00Z,1\n,2\n",
                     "line 3: record 1: _timestamp", id="csv"),
        pytest.param("bad.json", '[\n {"_timestamp": "2014-01-06T00:00:00Z"},\n'
                     ' {"_timestamp": 5}\n]', "line 3: record 1: _timestamp",
                     id="json"),
        pytest.param("broken.ndjson", '{"_timestamp": "2014-01-06T00:00:00Z"}\n{oops\n',
                     "line 2: The body is not valid JSON", id="ndjson-syntax"),
    ],
)  # fmt: skip
def test_send_bad_input_reported_by_line_nothing_sent(
    server: LiveServer, tmp_path: Path, name: str, text: str, line: str
) -> None:
    result = _send(server, _write(tmp_path, name, text))
    assert result.exit_code == 3
    assert line in result.output and "nothing was sent" in result.output
    assert _stored(server) == []


def test_send_dry_run(server: LiveServer, tmp_path: Path) -> None:
    path = _write(tmp_path, "r.json", json.dumps([{"_timestamp": DAY}] * 4))
    result = _send(server, path, "--dry-run")
    assert (result.exit_code, result.output) == (
        0, "checked 4 records: all valid; nothing sent\n",
    )  # fmt: skip
    assert _stored(server) == []


def test_send_refused_token(server: LiveServer, tmp_path: Path) -> None:
    path = _write(tmp_path, "r.json", json.dumps([{"_timestamp": DAY}]))
    result = _send(server, path, token="tb_" + "w" * 43)
    assert result.exit_code == 4
    assert "refused: 401" in result.output


def test_send_rejected_records_name_their_lines(
    server: LiveServer, tmp_path: Path, store: str
) -> None:
    schema = _write(tmp_path, "schema.json", '{"required": ["count"]}')
    cli("datasets", "update", "test_group_test_type", "--schema", str(schema),
        "--store", store)  # fmt: skip
    lines = [{"_id": f"x{i}", "_timestamp": DAY, "count": i} for i in range(5)]
    del lines[3]["count"]
    path = _write(tmp_path, "r.ndjson", "\n".join(map(json.dumps, lines)))
    result = _send(server, path, "--chunk-size", "2")
    assert result.exit_code == 5
    assert "line 4: record 1: count does not match" in result.output
    assert "the first 2 records were stored" in result.output
    assert [r["_id"] for r in _stored(server)] == ["x0", "x1"]


def test_send_unreachable_server(tmp_path: Path) -> None:
    path = _write(tmp_path, "r.json", json.dumps([{"_timestamp": DAY}]))
    url = f"http://127.0.0.1:{free_port()}{PATH}"
    result = cli("send", url, str(path), "--token", ALPHA, "--failfast")
    assert result.exit_code == 6
    assert "could not reach the server" in result.output


@pytest.mark.parametrize(
    "args",
    [["send"], ["send", "http://127.0.0.1:1/data/g/t", "--dry-run", "--format", "x"]],
)
def test_send_usage_errors(args: list[str]) -> None:
    assert cli(*args, input="[]").exit_code == 2


def test_send_token_from_file_and_environment(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "r.json", json.dumps([{"_id": "f", "_timestamp": DAY}]))
    token_file = _write(tmp_path, "token", ALPHA + "\n")
    by_file = cli("send", server.url + PATH, str(path), "--token-file", str(token_file))
    monkeypatch.setenv("TALLYBOOK_TOKEN", ALPHA)
    by_env = cli("send", server.url + PATH, str(path))
    assert (by_file.exit_code, by_env.exit_code) == (0, 0)


@pytest.mark.parametrize("format_", ["json", "ndjson", "csv"])
def test_read_formats(server: LiveServer, format_: str) -> None:
    record = {"_id": "r", "_timestamp": DAY, "ok": True, "gap": None, "n": 2}
    httpx.post(
        server.url + PATH, json=record, headers={"Authorization": f"Bearer {ALPHA}"}
    )
    result = cli("read", server.url + PATH, "--token", ALPHA, "--format", format_)
    expected = {
        "json": '{"data": [{"_id": "r", "_timestamp": "2014-01-06T00:00:00+00:00", '
        '"ok": true, "gap": null, "n": 2}]}\n',
        "ndjson": '{"_id": "r", "_timestamp": "2014-01-06T00:00:00+00:00", "ok": true, '
        '"gap": null, "n": 2}\n',
        "csv": "_id,_timestamp,gap,n,ok\nr,2014-01-06T00:00:00+00:00,,2,true\n",
    }
    if format_ == "csv":
        assert result.output == expected[format_]
    else:
        assert json.loads(result.output) == json.loads(expected[format_])


def test_send_200000_records_from_ndjson(
    server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "big.ndjson"
    with path.open("w") as out:
        for i in range(200_000):
            out.write(
                f'{{"_id": "b{i}", "_timestamp": "2014-01-06T00:00:00Z", "n": {i}}}\n'
            )
    started = time.monotonic()
    result = _send(server, path)
    took = time.monotonic() - started
    assert result.exit_code == 0, result.output
    read = cli("read", server.url + PATH, "--token", ALPHA, "--format", "ndjson")
    assert read.output.count("\n") == 200_000
    with capsys.disabled():
        print(f"\n  send: 200,000 NDJSON records in {took:.1f} s")


def test_send_progress_shown_only_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    progress = _Progress(2000)
    progress.update(1000)
    progress.update(2000)
    progress.finish()
    assert screen.getvalue() == (
        "\rsent 1,000 of 2,000 records (50%)\rsent 2,000 of 2,000 records (100%)\n"
    )


def test_read_passes_any_query(server: LiveServer) -> None:
    records = [{"_timestamp": DAY, "kind": k} for k in ("a", "b", "a")]
    httpx.post(
        server.url + PATH, json=records, headers={"Authorization": f"Bearer {ALPHA}"}
    )
    query = ("--query", "group_by=kind", "--query", "sort_by=_count:descending")
    result = cli("read", server.url + PATH, "--token", ALPHA, "--format", "csv", *query)
    assert result.output == "kind,_count\na,2\nb,1\n"
