"""The command line: `tallybook serve | datasets ...`."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from tallybook import server
from tallybook.datasets import (
    READ,
    WRITE,
    DataSet,
    check_segment,
    hash_token,
    new_token,
)
from tallybook.errors import DataSetExists, TallybookError
from tallybook.settings import Settings
from tallybook.store import Store, TokenEntry, open_store

T = TypeVar("T")
DEMO = DataSet(group="carers-allowance", type="transaction-count")
SHORT_TOKEN = 32
_STORE_HELP = (
    "SQLite file or postgresql:// URL of the store [env TALLYBOOK_STORE; "
    "default tallybook.db]."
)


@click.group()
@click.version_option(package_name="tallybook")
def main() -> None:
    """tallybook: a store for service performance data."""


@main.command()
@click.option("--store", help=_STORE_HELP)
@click.option("--host", help="Address to listen on [env TALLYBOOK_HOST].")
@click.option("--port", type=int, help="Port to listen on [env TALLYBOOK_PORT].")
@click.option(
    "--workers", type=int, help="Server processes (PostgreSQL only when above 1)."
)
@click.option("--demo", is_flag=True, help="Create a demo data set; print a token.")
def serve(
    store: str | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    demo: bool,
) -> None:
    """Serve the HTTP API until SIGTERM or Ctrl-C."""
    settings = _settings(store=store, host=host, port=port, workers=workers)
    if demo:
        token = _run(settings, lambda s: _demo_token(s))
        click.echo(_demo_text(settings, token))
    else:
        _run(settings, _check_store)
    try:
        server.run(settings)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@main.command()
@click.option("--store", help=_STORE_HELP)
def migrate(store: str | None) -> None:
    """Create or upgrade the store's schema."""
    settings = _settings(store=store)
    before, after = _migrate(settings)
    if before == after:
        click.echo(f"the schema is up to date (version {after})")
    else:
        click.echo(f"the schema went from version {before} to {after}")


@main.group()
def datasets() -> None:
    """Create and list data sets."""


@datasets.command("create")
@click.argument("group")
@click.argument("type")
@click.option("--token", "token_value", help="Import this existing token value.")
@click.option("--auto-ids", default="", help="Fields that make ids, e.g. a,b.")
@click.option("--public", is_flag=True, help="Allow reads without a token.")
@click.option("--description", default="", help="Free text for people.")
@click.option("--store", help=_STORE_HELP)
def create_data_set(
    group: str,
    type: str,
    token_value: str | None,
    auto_ids: str,
    public: bool,
    description: str,
    store: str | None,
) -> None:
    """Create the data set GROUP/TYPE and print its token (shown once)."""
    data_set = _data_set(group, type, auto_ids, public, description)
    if token_value is not None and len(token_value) < SHORT_TOKEN:
        click.echo(
            f"warning: the imported token has {len(token_value)} characters; "
            f"tokens under {SHORT_TOKEN} can be guessed. Rotate it when you can.",
            err=True,
        )
    settings = _settings(store=store)
    token = _run(settings, lambda s: _create(s, data_set, token_value))
    click.echo(f"created data set {data_set.name}")
    if token_value is None:
        click.echo(f"token (shown once, keep it secret): {token}")
    else:
        click.echo("token: the value given with --token")


@datasets.command("list")
@click.option("--store", help=_STORE_HELP)
def list_data_sets(store: str | None) -> None:
    """List every data set."""
    found = _run(_settings(store=store), lambda s: s.list_data_sets())
    click.echo("name\tgroup\ttype\tpublic\tauto_ids")
    for item in found:
        public = "yes" if item.public else "no"
        click.echo(
            f"{item.name}\t{item.group}\t{item.type}\t{public}\t{','.join(item.auto_ids)}"
        )


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _data_set(
    group: str, type: str, auto_ids: str, public: bool, description: str
) -> DataSet:
    try:
        check_segment("group", group)
        check_segment("type", type)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    fields = tuple(field.strip() for field in auto_ids.split(",") if field.strip())
    return DataSet(
        group=group, type=type, auto_ids=fields, public=public, description=description
    )


def _migrate(settings: Settings) -> tuple[int, int]:
    store = open_store(settings.store, pool_size=settings.pool_size)
    try:
        return asyncio.run(store.migrate())
    except TallybookError as exc:
        raise click.ClickException(str(exc)) from exc


async def _check_store(store: Store) -> None:
    """Opening the store checks it is reachable and its schema is current."""


def _run(settings: Settings, action: Callable[[Store], Awaitable[T]]) -> T:
    async def inside() -> T:
        async with open_store(settings.store, pool_size=settings.pool_size) as store:
            return await action(store)

    try:
        return asyncio.run(inside())
    except (TallybookError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


async def _create(store: Store, data_set: DataSet, value: str | None) -> str:
    await store.create_data_set(data_set)
    return await _issue(store, data_set, value)


async def _issue(store: Store, data_set: DataSet, value: str | None = None) -> str:
    token = value or new_token()
    await store.add_token(
        TokenEntry(
            hash=hash_token(token),
            scopes=frozenset((READ, WRITE)),
            data_set_name=data_set.name,
            name="",
            created_at=datetime.now(UTC),
        )
    )
    return token


async def _demo_token(store: Store) -> str:
    with contextlib.suppress(DataSetExists):
        await store.create_data_set(DEMO)
    return await _issue(store, DEMO)


def _demo_text(settings: Settings, token: str) -> str:
    url = f"http://{settings.host}:{settings.port}/data/{DEMO.group}/{DEMO.type}"
    body = (
        '[{"_id": "unique-identifier-1", "_timestamp": "2015-01-01T00:00:00Z", '
        '"count": 123}]'
    )
    auth = shlex.quote(f"Authorization: Bearer {token}")
    return "\n".join(
        [
            f"Demo data set {DEMO.name} is ready in {settings.store}.",
            f"Its token (shown once, keep it secret): {token}",
            "Send a record:",
            f"  curl -X POST {url} -H {auth} \\",
            f"    -H 'Content-Type: application/json' -d {shlex.quote(body)}",
            "Read it back:",
            f"  curl {url} -H {auth}",
            "",
        ]
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
