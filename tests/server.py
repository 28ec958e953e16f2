"""A real `tallybook serve` process on 127.0.0.1, for tests on the wire."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx2 as httpx


def free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LiveServer:
    """Runs `tallybook serve` on a free port until the context ends."""

    def __init__(self, store: str, log: Path, *extra: str) -> None:
        self.store = store
        self.log = log
        self.extra = extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LiveServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        command = [
            sys.executable, "-m", "tallybook", "serve", "--store", str(self.store),
            "--port", str(self.port), *self.extra,
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
            )
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, (
                self.log.read_text()
            )
            try:
                httpx.get(self.url + "/_status", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise TimeoutError(f"tallybook did not start: {self.log.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server and wait for it to exit; return its exit code."""
        if self.process is None:
            return 0
        self.process.send_signal(sig)
        code = self.process.wait(timeout=40)
        self.process = None
        return code

    def kill(self) -> list[int]:
        """SIGKILL the server as a crash would; return its helpers' pids.

        The helpers (the parser pool and multiprocessing's resource tracker)
        must then end by themselves: `helpers_left` tells whether they did.
        """
        assert self.process is not None
        helpers = descendants(self.process.pid)
        self.stop(signal.SIGKILL)
        return helpers

    def send_raw(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        """Send raw request bytes; return the status, headers and body."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as conn:
            conn.sendall(request)
            received = b""
            while b"\r\n\r\n" not in received:
                received += _receive(conn)
            head, _, body = received.partition(b"\r\n\r\n")
            status, headers = _parse_head(head)
            while len(body) < int(headers.get("content-length", "0")):
                body += _receive(conn)
        return status, headers, body


def descendants(root: int) -> list[int]:
    """The pids of a process's children, their children, and so on."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found, todo = [], [root]
    while todo:
        parent = todo.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        todo += children
    return found


def helpers_left(pids: list[int], seconds: float = 10) -> list[int]:
    """The pids still running after waiting up to `seconds` for them to end."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [pid for pid in pids if _running(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _receive(conn: socket.socket) -> bytes:
    chunk = conn.recv(65536)
    if not chunk:
        raise ConnectionError("the server closed the connection early")
    return chunk


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers
