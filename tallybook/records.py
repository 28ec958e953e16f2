"""Record validation and normalisation (no I/O).

A body becomes a batch of records in three steps: `load_json` turns bytes
into a JSON document, `as_batch` checks its shape, and `prepare` checks every
record, reporting every problem at once, and turns the good ones into
`Record` rows ready for a store.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry

from tallybook import timestamps
from tallybook.datasets import DataSet
from tallybook.errors import InvalidRequest, Problem

TIME_FIELDS = ("_timestamp", "_start_at", "_end_at")
TIMESTAMP = ("_timestamp",)
PERIOD_FIELDS = frozenset(("_start_at", "_end_at"))
RESERVED = frozenset((*TIME_FIELDS, "_id"))
MAX_ID_LENGTH = 512
MAX_PROBLEMS = 100
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_SPACE = re.compile(r"\s")
_BOM = b"\xef\xbb\xbf"
_known_keys: set[str] = set()  # keys that passed; bounded, see _remember


@dataclass(frozen=True)
class Limits:
    """Size limits applied to each record."""

    max_records: int = 100_000
    max_keys: int = 256
    max_key_length: int = 128
    max_string_length: int = 65_536
    max_id_length: int = MAX_ID_LENGTH


class Record(NamedTuple):
    """A checked record, as a store keeps it.

    Attributes:
        id: the record's `_id`, given or generated.
        timestamp: its `_timestamp` in microseconds since the Unix epoch.
        body: the whole record as JSON text, times normalised to UTC.
    """

    id: str
    timestamp: int
    body: str


Moment = tuple[str, int]  # a date-time as answers write it, and in microseconds


class _DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    built = dict(pairs)
    if len(built) != len(pairs):
        raise _DuplicateKey(f"the key {_repeated(pairs)!r} appears twice in one object")
    return built


def _repeated(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    raise AssertionError("no repeated key")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_refuse_constant)


def parse(
    body: bytes, data_set: DataSet, limits: Limits, *, array_required: bool = False
) -> list[Record]:
    """Turn a request body into checked rows: `load_json`, `as_batch`, `prepare`.

    Raises:
        InvalidRequest: any problem with the body or its records.
    """
    batch = as_batch(load_json(body), array_required=array_required)
    return prepare(batch, data_set, limits)


def load_json(data: bytes) -> Any:
    """Parse a JSON body, refusing what JSON or tallybook does not allow.

    A leading UTF-8 byte-order mark is ignored.

    Raises:
        InvalidRequest: the body is empty, not UTF-8, not JSON, or has an
            object with a repeated key.
    """
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if not data.strip():
        raise InvalidRequest("The request body is empty; send a JSON object or array.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"The body is not valid UTF-8: byte {exc.start} is 0x{data[exc.start]:02x}."
        ) from None
    try:
        return _DECODER.decode(text)
    except _DuplicateKey as exc:
        raise InvalidRequest(f"The body is not acceptable JSON: {exc}.") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno} (character {exc.pos})"
        raise InvalidRequest(
            f"The body is not valid JSON: {exc.msg} ({where})."
        ) from None
    except RecursionError:
        raise InvalidRequest("The body nests arrays or objects too deeply.") from None
    except ValueError as exc:
        reason = "a number has too many digits" if "digits" in str(exc) else str(exc)
        raise InvalidRequest(f"The body is not acceptable JSON: {reason}.") from None


def as_batch(document: Any, *, array_required: bool = False) -> list[dict[str, Any]]:
    """Check a document's shape: an object is a batch of one, an array a batch.

    Raises:
        InvalidRequest: a scalar, an array holding a non-object, or an object
            where `array_required` asks for an array.
    """
    if isinstance(document, dict) and not array_required:
        return [document]
    if not isinstance(document, list):
        wanted = "an array" if array_required else "an object or an array of objects"
        found = _json_kind(document)
        raise InvalidRequest(f"The body must be {wanted}, not {found}.")
    problems = [
        Problem(f"record {i}: is {_json_kind(item)}, not an object.", index=i)
        for i, item in enumerate(document)
        if not isinstance(item, dict)
    ]
    if problems:
        raise InvalidRequest(_summary(problems), _capped(problems))
    return document


def prepare(
    batch: list[dict[str, Any]], data_set: DataSet, limits: Limits
) -> list[Record]:
    """Check every record of a batch and turn it into store rows.

    Rows come back with one row per `_id`: of two equal ids in one batch the
    later wins.

    Raises:
        InvalidRequest: any record breaks a rule; every problem is listed.
    """
    if len(batch) > limits.max_records:
        raise InvalidRequest(
            f"The batch holds {len(batch)} records; the limit is "
            f"{limits.max_records} per request. Split it into smaller batches."
        )
    checker = _Checker(data_set, limits)
    rows = list(checker.rows(batch))
    if checker.problems:
        raise InvalidRequest(_summary(checker.problems), _capped(checker.problems))
    if len({row.id for row in rows}) == len(rows):
        return rows
    return list({row.id: row for row in rows}.values())


class _Checker:
    """Checks records one by one, collecting the problems of all of them."""

    def __init__(self, data_set: DataSet, limits: Limits) -> None:
        self.auto_ids = data_set.auto_ids
        self.limits = limits
        self.schema = None if data_set.schema is None else _validator(data_set.schema)
        self.problems: list[Problem] = []

    def rows(self, batch: list[dict[str, Any]]) -> Iterator[Record]:
        for index, record in enumerate(batch):
            row = self.row(index, record)
            if row is not None:
                yield row

    def row(self, index: int, record: dict[str, Any]) -> Record | None:
        before = len(self.problems)
        if len(record) > self.limits.max_keys:
            self.add(
                index,
                None,
                f"has {len(record)} keys; the limit is {self.limits.max_keys}.",
            )
            return None
        for key, value in record.items():
            if key not in _known_keys:
                self.check_key(index, key)
            if not self.plain(value):
                self.check_value(index, key, value)
        times = self.times(index, record)
        if self.schema is not None:
            self.check_schema(index, record)
        if len(self.problems) > before:
            return None
        return self.build(index, record, times)

    def check_schema(self, index: int, record: dict[str, Any]) -> None:
        assert self.schema is not None
        for error in self.schema.iter_errors(record):
            field = _schema_field(error)
            self.add(
                index, field, f"does not match the data set's schema: {error.message}."
            )

    def plain(self, value: Any) -> bool:
        """Whether a value is fine: the quick check run on every value."""
        kind = type(value)
        if kind is str:
            if len(value) > self.limits.max_string_length:
                return False
            if value.isascii():
                return "\x00" not in value
            return _BAD_TEXT.search(value) is None
        if kind is int:
            fits: bool = INT64_MIN <= value <= INT64_MAX
            return fits
        if kind is float:
            return math.isfinite(value)
        return kind is bool or value is None

    def add(self, index: int, field: str | None, text: str) -> None:
        # A key may hold a lone surrogate (JSON's "\ud800"), which no JSON
        # encoder can write back: show it escaped, as the body spelled it.
        field = None if field is None else _printable(field)
        where = f"record {index}: " + (f"{field} " if field else "")
        message = _printable(where + text)
        self.problems.append(Problem(message, index=index, field=field))

    def check_key(self, index: int, key: str) -> None:
        if key in _known_keys:
            return
        if len(key) > self.limits.max_key_length:
            self.add(
                index,
                key[:40] + "...",
                f"is a key longer than {self.limits.max_key_length} characters.",
            )
        elif _KEY.fullmatch(key) is None:
            self.add(
                index,
                key,
                "is not a valid key; use letters, digits and '_', "
                "not starting with a digit.",
            )
        elif key[0] == "_" and key not in RESERVED:
            self.add(
                index,
                key,
                "is not a recognised internal field; keys starting "
                "with '_' must be _id, _timestamp, _start_at or _end_at.",
            )
        else:
            _remember(key)

    def check_value(self, index: int, key: str, value: Any) -> None:
        kind = type(value)
        if kind is str:
            self.check_text(index, key, value)
        elif kind is int:
            if not INT64_MIN <= value <= INT64_MAX:
                self.add(
                    index,
                    key,
                    f"{value} does not fit in a 64-bit integer; send it as a string.",
                )
        elif kind is float:
            if not math.isfinite(value):
                self.add(index, key, "is not a finite number.")
        elif kind is dict or kind is list:
            self.add(
                index,
                key,
                f"is {_json_kind(value)}; values must be strings, "
                "numbers, booleans or null.",
            )

    def check_text(self, index: int, key: str, value: str) -> None:
        if len(value) > self.limits.max_string_length:
            self.add(
                index,
                key,
                f"is a string of {len(value)} characters; the limit"
                f" is {self.limits.max_string_length}.",
            )
        elif _BAD_TEXT.search(value) is not None:
            self.add(
                index,
                key,
                "contains U+0000 or a lone surrogate, which cannot be stored.",
            )

    def times(self, index: int, record: dict[str, Any]) -> dict[str, Moment]:
        found: dict[str, Moment] = {}
        if "_timestamp" not in record:
            self.add(
                index,
                "_timestamp",
                "is missing; every record needs one, e.g. "
                f'"_timestamp": "{timestamps.EXAMPLE}".',
            )
        fields = TIME_FIELDS if len(record.keys() & PERIOD_FIELDS) else TIMESTAMP
        for field in fields:
            if field in record:
                moment = self.moment(index, field, record[field])
                if moment is not None:
                    found[field] = moment
        if "_start_at" in found and "_end_at" in found:
            self.check_period(index, found["_start_at"], found["_end_at"])
        if "_id" in record:
            self.check_id(index, record["_id"])
        return found

    def check_period(self, index: int, start: Moment, end: Moment) -> None:
        if end[1] < start[1]:
            self.add(index, "_end_at", f"{end[0]} is before _start_at {start[0]}.")

    def moment(self, index: int, field: str, value: Any) -> Moment | None:
        if type(value) is not str:
            self.add(
                index,
                field,
                f"must be a date-time string such as "
                f"{timestamps.EXAMPLE}, not {_json_kind(value)}.",
            )
            return None
        try:
            return timestamps.normalise(value)
        except timestamps.TimestampError as exc:
            self.add(
                index, field, f"{_quote(value)} {exc}; use e.g. {timestamps.EXAMPLE}."
            )
            return None

    def check_id(self, index: int, value: Any) -> None:
        if type(value) is not str:
            self.add(index, "_id", f"must be a string, not {_json_kind(value)}.")
        elif (
            not value or len(value) > self.limits.max_id_length or _SPACE.search(value)
        ):
            self.add(
                index,
                "_id",
                f"{_quote(value)} is not a valid id; use 1 to "
                f"{self.limits.max_id_length} characters with no whitespace.",
            )

    def build(
        self, index: int, record: dict[str, Any], times: dict[str, Moment]
    ) -> Record | None:
        body = dict(record)
        for field, (text, _) in times.items():
            body[field] = text
        record_id = record.get("_id") or self.auto_id(index, body)
        if record_id is None:
            return None
        body["_id"] = record_id
        return Record(record_id, times["_timestamp"][1], orjson.dumps(body).decode())

    def auto_id(self, index: int, body: dict[str, Any]) -> str | None:
        if not self.auto_ids:
            return str(uuid.uuid4())
        missing = [field for field in self.auto_ids if field not in body]
        if missing:
            self.add(
                index,
                missing[0],
                "is missing; it is one of the data set's "
                "auto_ids fields, needed to make the record's _id.",
            )
            return None
        joined = ".".join(_id_part(body[field]) for field in self.auto_ids)
        return base64.b64encode(joined.encode()).decode()


@functools.lru_cache(maxsize=256)
def _compiled(schema_text: str) -> Draft202012Validator:
    # An empty registry: a `$ref` outside the schema is never fetched (the
    # validator's default would fetch URLs, from the server's network).
    return Draft202012Validator(json.loads(schema_text), registry=Registry())


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return _compiled(json.dumps(schema, sort_keys=True))


def _schema_field(error: ValidationError) -> str | None:
    """The record field a schema error is about, when there is one."""
    if error.absolute_path:
        return str(error.absolute_path[0])
    required = error.validator_value if error.validator == "required" else None
    if isinstance(required, list) and isinstance(error.instance, dict):
        missing = [key for key in required if key not in error.instance]
        return str(missing[0]) if missing else None
    return None


def _id_part(value: Any) -> str:
    """Write a value as the original service did when it made auto ids."""
    if value is None or isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else repr(value)


def _remember(key: str) -> None:
    if len(_known_keys) < 10_000:
        _known_keys.add(key)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _printable(text: str) -> str:
    """The text with each lone surrogate written as a backslash escape."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _quote(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:60] + "...")


def _summary(problems: list[Problem]) -> str:
    count = len(problems)
    if count == 1:
        return problems[0].message
    bad = len({p.index for p in problems})
    records = "record" if bad == 1 else "records"
    return f"{count} problems in {bad} {records}; nothing was stored."


def _capped(problems: list[Problem]) -> list[Problem]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    rest = len(problems) - MAX_PROBLEMS
    return [*problems[:MAX_PROBLEMS], Problem(f"... and {rest} more problems.")]
