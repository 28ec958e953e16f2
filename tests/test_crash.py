"""Acknowledged writes survive a server killed (SIGKILL) in the middle of a load.

Each round starts a real server on the store, checks that everything
acknowledged so far is there, runs concurrent writers for a while and kills
the server while their requests are in flight. A last server checks the
final round. A batch counts as acknowledged only when its answer was a 200.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.conftest import ALPHA
from tests.server import LiveServer, helpers_left

ROUNDS = 3
WRITERS = 8
BATCH_SIZES = (1, 10, 500)
LOAD_SECONDS = 1.5
# Safety bound on each writer's requests in one round, far above what fits.
MAX_REQUESTS = 2_000
PATH = "/data/test-group/test-type"
HEADERS = {"Authorization": f"Bearer {ALPHA}"}

Record = dict[str, Any]


@dataclass
class Load:
    """Every batch sent, keyed by request name, and what became of it."""

    sent: dict[str, list[Record]] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    killing: threading.Event = field(default_factory=threading.Event)
    cut: int = 0  # requests that got no answer: the kill cut them off
    failures: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _batch(name: str, size: int) -> list[Record]:
    return [
        {
            "_id": f"{name}i{index}",
            "_timestamp": f"2014-01-{1 + index % 28:02d}T00:00:{index % 60:02d}+00:00",
            "request": name,
            "index": index,
            "size": size,
            "ratio": index / 7,
            "label": f"é {name} ✓",
            "even": index % 2 == 0,
            "nothing": None,
        }
        for index in range(size)
    ]


def _write(server: LiveServer, load: Load, writer: int, round_: int) -> None:
    """Post batches until the server is gone; note each answer."""
    sizes = itertools.cycle(BATCH_SIZES)
    for _ in range(writer % len(BATCH_SIZES)):
        next(sizes)
    with httpx.Client(base_url=server.url, headers=HEADERS, timeout=20) as client:
        for number in range(MAX_REQUESTS):
            name = f"r{round_}w{writer}n{number}"
            batch = _batch(name, next(sizes))
            with load.lock:
                load.sent[name] = batch
            try:
                status = client.post(PATH, json=batch).status_code
            except httpx.TransportError:
                assert load.killing.is_set(), f"{name} failed before the kill"
                with load.lock:
                    load.cut += 1
                return
            with load.lock:
                load.statuses[status] += 1
                if status == 200:
                    load.acked.add(name)


def _writer(server: LiveServer, load: Load, writer: int, round_: int) -> None:
    try:
        _write(server, load, writer, round_)
    except BaseException as error:  # the test re-raises it, in its own thread
        load.failures.append(error)


def _load_and_kill(server: LiveServer, load: Load, round_: int) -> None:
    """Run the writers, SIGKILL the server under them, wait for them to end."""
    load.killing = threading.Event()
    writers = [
        threading.Thread(target=_writer, args=(server, load, n, round_))
        for n in range(WRITERS)
    ]
    for writer in writers:
        writer.start()
    acked_before, cut_before = len(load.acked), load.cut
    time.sleep(LOAD_SECONDS)
    load.killing.set()
    assert helpers_left(server.kill()) == []
    for writer in writers:
        writer.join(timeout=30)
    assert not any(writer.is_alive() for writer in writers)
    assert not load.failures, load.failures
    assert len(load.acked) > acked_before, "nothing was acknowledged before the kill"
    assert load.cut > cut_before, "the kill cut no request off"


def _check(server: LiveServer, load: Load) -> None:
    """Every acknowledged batch is stored whole; any other, whole or not at all."""
    answer = httpx.get(server.url + PATH, headers=HEADERS, timeout=60)
    assert answer.status_code == 200, answer.text
    stored = {record["_id"]: record for record in answer.json()["data"]}
    sent = {r["_id"]: r for batch in load.sent.values() for r in batch}
    assert stored.keys() <= sent.keys(), "records that were never sent"
    for name, batch in load.sent.items():
        found = [stored.get(record["_id"]) for record in batch]
        if name in load.acked or any(found):
            assert found == batch, f"batch {name} is not stored whole"


def test_crash_acknowledged_writes_survive_sigkill(store: str, tmp_path: Path) -> None:
    load = Load()
    for round_ in range(ROUNDS):
        with LiveServer(store, tmp_path / "server.log") as server:
            _check(server, load)
            _load_and_kill(server, load, round_)
    with LiveServer(store, tmp_path / "server.log") as server:
        _check(server, load)

    assert set(load.statuses) == {200}, load.statuses
