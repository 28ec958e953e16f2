"""`tallybook send` and `tallybook read`: the client library on the command line.

`send` exit codes: 0 sent, 2 usage, 3 invalid input (nothing sent), 4 refused
by the server (401/403), 5 records rejected (400 and other 4xx), 6 network or
server failure after retries. The flags of the original `backdrop-send`
(`--url`, `--token`, `--timeout`, `--attempts`, `--failfast`) keep working.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import IO, Any
from urllib.parse import urlsplit

import click

from tallybook import inputs, results
from tallybook.client import Client, DataSetClient, Retry
from tallybook.errors import (
    ClientError,
    ConnectionFailed,
    ErrorAnswer,
    Refused,
    ServerFailed,
)

SENT, USAGE, INVALID, REFUSED, REJECTED, FAILED = 0, 2, 3, 4, 5, 6
_MANY = ("group_by", "collect", "filter_by", "filter_by_prefix")


@click.command()
@click.argument("url", required=False)
@click.argument("file", required=False, type=click.File("r", encoding="utf-8"))
@click.option("--url", "url_option", help="The data set's URL (backdrop-send's flag).")
@click.option(
    "--format",
    "format_",
    type=click.Choice(inputs.FORMATS),
    help="Input format [from the file's extension, else from its content].",
)
@click.option("--token-file", type=click.File(), help="File holding the token.")
@click.option(
    "--token",
    help="The token. Visible to other users in the process list: prefer "
    "--token-file or TALLYBOOK_TOKEN.",
)
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for each answer.",
)
@click.option(
    "--attempts",
    type=int,
    default=5,
    show_default=True,
    help="Most tries of each request.",
)
@click.option("--failfast", is_flag=True, help="Try each request once.")
@click.option("--retry-500", is_flag=True, help="Also retry 500 answers.")
@click.option(
    "--chunk-size",
    type=int,
    default=1000,
    show_default=True,
    help="Records per request.",
)
@click.option("--dry-run", is_flag=True, help="Check the input; send nothing.")
def send(
    url: str | None, file: IO[str] | None, url_option: str | None, **options: Any
) -> None:
    """Send the records of FILE (or standard input) to the data set at URL.

    URL is the data set's full address, e.g.
    https://tallybook.example/data/carers-allowance/transaction-count.
    Every record is checked before anything is sent.
    """
    target = _target(url_option or url)
    if file is None and url_option and url and url != "-":
        file = click.open_file(url, encoding="utf-8")
    source: IO[str] = file if file is not None else sys.stdin
    text = source.read()

    batch = _checked_input(text, getattr(file, "name", None), options["format_"])
    if options["dry_run"]:
        _say(f"checked {len(batch.records):,} records: all valid; nothing sent")
        return

    token = _token(options["token_file"], options["token"])
    sys.exit(_deliver(target, token, batch, options))


@click.command()
@click.argument("url")
@click.option(
    "--format",
    "format_",
    type=click.Choice(("json", "ndjson", "csv")),
    default="json",
    show_default=True,
)
@click.option("--token-file", type=click.File(), help="File holding the token.")
@click.option("--token", help="The token (visible in the process list).")
@click.option("--start-at", help="Records at or after this date-time.")
@click.option("--end-at", help="Records before this date-time.")
@click.option("--limit", type=int, help="At most this many records.")
@click.option(
    "--query",
    "extra",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other query parameter, e.g. period=week; repeatable.",
)
@click.option("--timeout", type=float, default=30.0, show_default=True)
def read(
    url: str,
    format_: str,
    token_file: IO[str] | None,
    token: str | None,
    extra: tuple[str, ...],
    timeout: float,
    **query: Any,
) -> None:
    """Print the records (or query rows) of the data set at URL."""
    base, path = _split(url)
    value = _token(token_file, token, required=False)
    for pair in extra:
        key, equals, text = pair.partition("=")
        if not equals:
            raise click.UsageError(f"--query {pair!r} needs KEY=VALUE")
        if key in _MANY:
            query.setdefault(key, []).append(text)
        else:
            query[key] = text
    try:
        with Client(base, value, timeout=timeout) as client:
            found = client.path(path).read(**query)
    except ClientError as exc:
        raise click.ClickException(str(exc)) from exc
    _print(found, format_, query.get("group_by", []))


def _target(url: str | None) -> str:
    if not url or url == "-":
        raise click.UsageError("give the data set's URL, e.g. tallybook send URL FILE")
    return url


def _checked_input(text: str, name: str | None, format_: str | None) -> inputs.Batch:
    chosen = format_ or inputs.guess_format(name, text)
    try:
        return inputs.read(text, chosen)
    except inputs.InputError as exc:
        for problem in exc.problems[:50]:
            click.echo(problem, err=True)
        more = len(exc.problems) - 50
        if more > 0:
            click.echo(f"... and {more} more problems", err=True)
        click.echo("nothing was sent", err=True)
        sys.exit(INVALID)


def _token(
    source: IO[str] | None, given: str | None, *, required: bool = True
) -> str | None:
    """The token: from --token-file, else --token, else TALLYBOOK_TOKEN."""
    if source is not None:
        return source.read().strip()
    value = given or os.environ.get("TALLYBOOK_TOKEN")
    if value is None and required:
        raise click.UsageError("give a token: --token-file, TALLYBOOK_TOKEN or --token")
    return value


def _deliver(url: str, token: str | None, batch: inputs.Batch, options: Any) -> int:
    base, path = _split(url)
    attempts = 1 if options["failfast"] else max(1, options["attempts"])
    retry = dataclasses.replace(Retry(), attempts=attempts, on_500=options["retry_500"])
    started = time.monotonic()
    progress = _Progress(len(batch.records))
    with Client(
        base,
        token,
        timeout=options["timeout"],
        retry=retry,
        chunk_size=options["chunk_size"],
    ) as client:
        code = _post(client.path(path), batch, progress)
    progress.finish()
    if code == SENT:
        seconds = time.monotonic() - started
        _say(f"sent {len(batch.records):,} records to {url} in {seconds:.1f} s")
    return code


def _post(target: DataSetClient, batch: inputs.Batch, progress: _Progress) -> int:
    try:
        target.post(batch.records, progress=progress.update)
    except Refused as exc:
        _say(f"refused: {exc}. Check the token and that it may write here.")
        return REFUSED
    except ServerFailed as exc:
        _say(f"the server failed: {exc}")
        return FAILED
    except ErrorAnswer as exc:
        _report_rejected(exc, batch, progress.sent, target.client.chunk_size)
        return REJECTED
    except ConnectionFailed as exc:
        _say(f"could not reach the server: {exc}")
        return FAILED
    return SENT


def _report_rejected(
    exc: ErrorAnswer, batch: inputs.Batch, sent: int, chunk: int
) -> None:
    _say(f"rejected: {exc}")
    for error in exc.errors[:50]:
        index = error.get("index")
        where = "" if index is None else f"line {batch.lines[sent + index]}: "
        _say(f"  {where}{error.get('message')}")
    if sent:
        _say(f"the first {sent:,} records were stored; the rest were not sent")


def _split(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.UsageError(f"{url!r} is not an http(s) URL of a data set")
    return f"{parts.scheme}://{parts.netloc}", parts.path or "/"


def _print(found: list[dict[str, Any]], format_: str, first: list[str]) -> None:
    if format_ == "json":
        click.echo(json.dumps({"data": found}, ensure_ascii=False))
    elif format_ == "ndjson":
        for record in found:
            click.echo(json.dumps(record, ensure_ascii=False))
    else:
        sys.stdout.write(results.to_csv(found, first))


def _say(text: str) -> None:
    click.echo(text, err=True)


class _Progress:
    """A progress line on stderr, shown only when stderr is a terminal."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0
        self.shown = sys.stderr.isatty()

    def update(self, sent: int) -> None:
        self.sent = sent
        if self.shown:
            share = 100 * sent // max(self.total, 1)
            sys.stderr.write(f"\rsent {sent:,} of {self.total:,} records ({share}%)")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.shown and self.sent:
            sys.stderr.write("\n")
