"""The command line: `tallybook serve | migrate | datasets | tokens | send | read`.

Exit codes: 0 done, 1 refused or failed (the message says why), 2 usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click

from tallybook import admin, server
from tallybook.cli_client import read, send
from tallybook.datasets import ADMIN, READ, WRITE, DataSet, Token
from tallybook.errors import DataSetExists, DataSetNotFound, TallybookError
from tallybook.settings import Settings
from tallybook.store import Store, open_store

T = TypeVar("T")
DEMO = DataSet(group="carers-allowance", type="transaction-count")
_STORE_HELP = (
    "SQLite file or postgresql:// URL of the store [env TALLYBOOK_STORE; "
    "default tallybook.db]."
)
store_option = click.option("--store", help=_STORE_HELP)
_SUMMARY_HELP = (
    "Keep per-hour totals for fast aggregates: fields to group by, ':', "
    "fields to collect, e.g. channel,region:count."
)


@click.group()
@click.version_option(package_name="tallybook")
def main() -> None:
    """tallybook: a store for service performance data."""


@main.command()
@store_option
@click.option("--host", help="Address to listen on [env TALLYBOOK_HOST].")
@click.option("--port", type=int, help="Port to listen on [env TALLYBOOK_PORT].")
@click.option(
    "--workers", type=int, help="Server processes (PostgreSQL only when above 1)."
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="Log lines as text or JSON [env TALLYBOOK_LOG_FORMAT].",
)
@click.option("--demo", is_flag=True, help="Create a demo data set; print a token.")
def serve(demo: bool, **options: Any) -> None:
    """Serve the HTTP API until SIGTERM or Ctrl-C."""
    settings = _settings(**options)
    if settings.admin_token:
        _checked(lambda: admin.check_token_value(settings.admin_token))
        _warn_if_short(settings.admin_token)
    if demo:
        value = _run(settings, _demo_token)
        click.echo(_demo_text(settings, value))
    else:
        _run(settings, _check_store)
    try:
        server.run(settings)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@main.command()
@store_option
def migrate(store: str | None) -> None:
    """Create or upgrade the store's schema."""
    settings = _settings(store=store)
    try:
        before, after = asyncio.run(_open(settings).migrate())
    except TallybookError as exc:
        raise click.ClickException(str(exc)) from exc
    if before == after:
        click.echo(f"the schema is up to date (version {after})")
    else:
        click.echo(f"the schema went from version {before} to {after}")


@main.group()
def datasets() -> None:
    """Create, show, change and delete data sets."""


@datasets.command("create")
@click.argument("group")
@click.argument("type")
@click.option("--token", "token_value", help="Import this existing token value.")
@click.option("--auto-ids", help="Fields that make ids, e.g. _timestamp,channel.")
@click.option(
    "--public", is_flag=True, default=None, help="Allow reads without a token."
)
@click.option("--description", help="Free text for people.")
@click.option("--schema", type=click.File(), help="JSON Schema file for each record.")
@click.option("--max-age-expected", type=int, help="Seconds before it counts as stale.")
@click.option("--summary", help=_SUMMARY_HELP)
@store_option
def create_data_set(
    group: str, type: str, token_value: str | None, store: str | None, **given: Any
) -> None:
    """Create the data set GROUP/TYPE and print its token (shown once)."""
    data_set = _checked(lambda: admin.build_data_set(group, type, **_given(given)))
    _warn_if_short(token_value)
    created, value, _ = _run(
        _settings(store=store),
        lambda s: admin.create_data_set(s, data_set, token_value),
    )
    click.echo(f"created data set {created.name}")
    if token_value is None:
        click.echo(f"token (shown once, keep it secret): {value}")
    else:
        click.echo("token: the value given with --token")


@datasets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def list_data_sets(as_json: bool, store: str | None) -> None:
    """List every data set."""
    found = _run(_settings(store=store), lambda s: s.list_data_sets())
    if as_json:
        click.echo(json.dumps([admin.describe_data_set(d) for d in found], indent=2))
        return
    click.echo("name\tgroup\ttype\tpublic\tauto_ids")
    for item in found:
        public = "yes" if item.public else "no"
        auto_ids = ",".join(item.auto_ids)
        click.echo(f"{item.name}\t{item.group}\t{item.type}\t{public}\t{auto_ids}")


@datasets.command("show")
@click.argument("name")
@store_option
def show_data_set(name: str, store: str | None) -> None:
    """Print a data set's settings as JSON."""
    found = _run(_settings(store=store), lambda s: _find(s, name))
    click.echo(json.dumps(admin.describe_data_set(found), indent=2))


@datasets.command("update")
@click.argument("name")
@click.option("--auto-ids", help="Fields that make ids; '' for none.")
@click.option("--public/--private", default=None, help="Reads without a token?")
@click.option("--description", help="Free text for people.")
@click.option("--schema", type=click.File(), help="JSON Schema file for each record.")
@click.option("--no-schema", is_flag=True, help="Remove the schema.")
@click.option("--max-age-expected", type=int, help="Seconds before it counts as stale.")
@click.option("--no-max-age", is_flag=True, help="Never count it as stale.")
@click.option("--summary", help=_SUMMARY_HELP)
@click.option("--no-summary", is_flag=True, help="Drop the summary.")
@store_option
def update_data_set(name: str, store: str | None, **given: Any) -> None:
    """Change some settings of a data set; print them all."""
    changes = _given(given)
    for flag, setting in _REMOVALS.items():
        if changes.pop(flag, False):
            changes[setting] = None

    async def update(s: Store) -> DataSet:
        found = await _find(s, name)
        return await s.update_data_set(
            _checked(lambda: admin.change_settings(found, **changes))
        )

    updated = _run(_settings(store=store), update)
    click.echo(json.dumps(admin.describe_data_set(updated), indent=2))


@datasets.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Confirm: records and tokens go too.")
@store_option
def delete_data_set(name: str, yes: bool, store: str | None) -> None:
    """Delete a data set, its records and its tokens (needs --yes)."""
    if not yes:
        raise click.UsageError(
            f"deleting {name} removes all its records and tokens; add --yes to confirm."
        )
    _run(_settings(store=store), lambda s: s.delete_data_set(name))
    click.echo(f"deleted data set {name}")


@datasets.command("empty")
@click.argument("name")
@store_option
def empty_data_set(name: str, store: str | None) -> None:
    """Remove every record of a data set; keep its settings and tokens."""

    async def empty(s: Store) -> int:
        return await s.replace(await _find(s, name), [])

    count = _run(_settings(store=store), empty)
    click.echo(f"{name} now contains {count} records")


@main.group()
def tokens() -> None:
    """Issue, import, list, rotate and revoke tokens."""


def _token_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--data-set", help="The data set the token is for."),
        click.option(
            "--scope",
            "scopes",
            multiple=True,
            type=click.Choice([READ, WRITE, ADMIN]),
            help="read, write or admin; repeat for several [read and write].",
        ),
        click.option("--admin", is_flag=True, help="An admin token (all data sets)."),
        click.option("--name", default="", help="A label for people."),
        click.option("--expires-in", type=int, help="Seconds until it stops working."),
        store_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


@tokens.command("issue")
@_token_options
def issue_token(store: str | None, **options: Any) -> None:
    """Issue a new token and print its value (shown once)."""
    value, token = _issue(store, options, None)
    click.echo(f"issued token {token.id} ({_scopes(token)})")
    click.echo(f"token (shown once, keep it secret): {value}")


@tokens.command("import")
@_token_options
@click.option(
    "--value-file",
    type=click.File(),
    default="-",
    help="File holding the token value [standard input].",
)
def import_token(store: str | None, value_file: Any, **options: Any) -> None:
    """Import an existing token value (read from standard input)."""
    value = value_file.read().strip()
    _warn_if_short(value)
    _, token = _issue(store, options, value)
    click.echo(f"imported token {token.id} ({_scopes(token)})")


@tokens.command("list")
@click.option("--data-set", help="Only this data set's tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
def list_tokens(data_set: str | None, as_json: bool, store: str | None) -> None:
    """List tokens (never their values: only a prefix to recognise them)."""
    found = _run(_settings(store=store), lambda s: s.list_tokens(data_set))
    described = [admin.describe_token(token) for token in found]
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    columns = (
        "id",
        "prefix",
        "data_set",
        "scopes",
        "name",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )
    click.echo("\t".join(columns))
    for item in described:
        click.echo("\t".join(_cell(item[column]) for column in columns))


@tokens.command("revoke")
@click.argument("token_id", type=int)
@store_option
def revoke_token(token_id: int, store: str | None) -> None:
    """Make a token stop working now."""
    _run(_settings(store=store), lambda s: admin.revoke_token(s, token_id))
    click.echo(f"revoked token {token_id}")


@tokens.command("rotate")
@click.argument("token_id", type=int)
@click.option(
    "--grace",
    type=int,
    default=86_400,
    show_default=True,
    help="Seconds the old token keeps working.",
)
@store_option
def rotate_token(token_id: int, grace: int, store: str | None) -> None:
    """Issue a successor to a token; the old one works for --grace seconds."""
    value, new, old = _run(
        _settings(store=store), lambda s: admin.rotate_token(s, token_id, grace)
    )
    click.echo(f"issued token {new.id}; token {old.id} stops at {old.expires_at}")
    click.echo(f"token (shown once, keep it secret): {value}")


def _issue(
    store: str | None, options: dict[str, Any], value: str | None
) -> tuple[str, Token]:
    scopes = set(options["scopes"] or ((ADMIN,) if options["admin"] else (READ, WRITE)))
    if options["admin"]:
        scopes.add(ADMIN)
    expires_in = options["expires_in"]
    if expires_in is not None and not 0 < expires_in <= admin.LONGEST:
        raise click.UsageError(f"--expires-in must be 1 to {admin.LONGEST} seconds.")
    expires = (
        None
        if expires_in is None
        else datetime.now(UTC) + timedelta(seconds=expires_in)
    )
    return _run(
        _settings(store=store),
        lambda s: admin.issue_token(
            s,
            scopes=frozenset(scopes),
            data_set_name=options["data_set"],
            name=options["name"],
            expires_at=expires,
            value=value,
        ),
    )


_REMOVALS = {
    "no_schema": "schema",
    "no_max_age": "max_age_expected",
    "no_summary": "summary",
}


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """The settings a command was given, read from files where needed."""
    given = {name: value for name, value in options.items() if value is not None}
    if "schema" in given:
        given["schema"] = _checked(lambda: json.load(given["schema"]))
    return given


def _checked(make: Callable[[], T]) -> T:
    try:
        return make()
    except (admin.SettingsError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise click.UsageError(str(exc)) from exc


def _warn_if_short(value: str | None) -> None:
    if value is not None and len(value) < admin.SHORT_TOKEN:
        click.echo(
            f"warning: the imported token has {len(value)} characters; tokens "
            f"under {admin.SHORT_TOKEN} can be guessed. Rotate it when you can.",
            err=True,
        )


def _shown(location: str) -> str:
    """A store location fit to print: any password in a URL hidden."""
    parts = urlsplit(location)
    if not parts.password:
        return location
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _scopes(token: Token) -> str:
    where = "all data sets" if token.data_set_name is None else token.data_set_name
    return f"{', '.join(sorted(token.scopes))} on {where}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return ",".join(value) if isinstance(value, list) else str(value)


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


def _open(settings: Settings) -> Store:
    return open_store(settings.store, pool_size=settings.pool_size)


def _run(settings: Settings, action: Callable[[Store], Awaitable[T]]) -> T:
    async def inside() -> T:
        async with _open(settings) as store:
            return await action(store)

    try:
        return asyncio.run(inside())
    except admin.SettingsError as exc:
        raise click.UsageError(str(exc)) from exc
    except (TallybookError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


async def _find(store: Store, name: str) -> DataSet:
    found = await store.get_data_set(name)
    if found is None:
        raise DataSetNotFound(f"no data set is named {name}")
    return found


async def _check_store(store: Store) -> None:
    """Opening the store checks it is reachable and its schema is current."""


async def _demo_token(store: Store) -> str:
    with contextlib.suppress(DataSetExists):
        await store.create_data_set(DEMO)
    value, _ = await admin.issue_token(
        store, scopes=frozenset((READ, WRITE)), data_set_name=DEMO.name, name="demo"
    )
    return value


def _demo_text(settings: Settings, token: str) -> str:
    url = f"http://{settings.host}:{settings.port}/data/{DEMO.group}/{DEMO.type}"
    body = (
        '[{"_id": "unique-identifier-1", "_timestamp": "2015-01-01T00:00:00Z", '
        '"count": 123}]'
    )
    auth = shlex.quote(f"Authorization: Bearer {token}")
    return "\n".join(
        [
            f"Demo data set {DEMO.name} is ready in {_shown(settings.store)}.",
            f"Its token (shown once, keep it secret): {token}",
            "Send a record:",
            f"  curl -X POST {url} -H {auth} \\",
            f"    -H 'Content-Type: application/json' -d {shlex.quote(body)}",
            "Read it back:",
            f"  curl {url} -H {auth}",
            "",
        ]
    )


main.add_command(send)
main.add_command(read)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
