"""Reading records from files for `tallybook send` (no network).

Formats: a JSON array or object (`json`), one JSON object per line
(`ndjson`), or CSV with a header row (`csv`). Each record keeps the line it
started on, so problems can be reported by line. Every record is checked with
the server's own rules before anything is sent.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tallybook import records
from tallybook.datasets import DataSet
from tallybook.errors import InvalidRequest

FORMATS = ("json", "ndjson", "csv")
_SUFFIXES = {".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson", ".csv": "csv"}
# Local checks know no data set: its auto_ids and schema are the server's.
_ANY_DATA_SET = DataSet(group="local", type="check")
_INTEGER = re.compile(r"-?\d+", re.ASCII)
_DECIMAL = re.compile(r"-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?", re.ASCII)


class InputError(ValueError):
    """Input that cannot be sent; each line of `problems` says where and why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems[0] if problems else "invalid input")
        self.problems = problems


@dataclass
class Batch:
    """Records read from a file, with the line each one starts on."""

    records: list[dict[str, Any]]
    lines: list[int]


def guess_format(name: str | None, text: str) -> str:
    """The format a file's name says, else what its text looks like."""
    if name and Path(name).suffix.lower() in _SUFFIXES:
        return _SUFFIXES[Path(name).suffix.lower()]
    start = text.lstrip()[:1]
    if start == "[":
        return "json"
    if start == "{":
        first_line = text.lstrip().split("\n", 1)[0]
        return "ndjson" if _is_object(first_line) and "\n" in text.strip() else "json"
    return "csv"


def read(text: str, format: str) -> Batch:
    """Parse and check records in `format`.

    Raises:
        InputError: the text does not parse, or records break the rules.
    """
    batch = {"json": _json, "ndjson": _ndjson, "csv": _csv}[format](text)
    check(batch)
    return batch


def check(batch: Batch) -> None:
    """Check every record with the server's rules; raise InputError if any fail."""
    limits = records.Limits(max_records=max(len(batch.records), 1))
    try:
        records.prepare(batch.records, _ANY_DATA_SET, limits)
    except InvalidRequest as exc:
        located = [_located(p.message, p.index, batch) for p in exc.problems]
        raise InputError(located) from None


def _located(message: str, index: int | None, batch: Batch) -> str:
    if index is None:
        return message
    return f"line {batch.lines[index]}: {message}"


def _json(text: str) -> Batch:
    try:
        document = records.load_json(text.encode("utf-8", "surrogatepass"))
        found = records.as_batch(document)
    except InvalidRequest as exc:
        raise InputError([p.message for p in exc.problems]) from None
    return Batch(found, _object_lines(text, len(found)))


def _object_lines(text: str, count: int) -> list[int]:
    """The line on which each top-level object of a JSON document starts."""
    if text.lstrip().startswith("{"):
        return [text[: text.index("{")].count("\n") + 1]
    decoder, lines, position = json.JSONDecoder(), [], text.index("[") + 1
    for _ in range(count):
        position = text.index("{", position)
        lines.append(text.count("\n", 0, position) + 1)
        _, position = decoder.raw_decode(text, position)
    return lines


def _ndjson(text: str) -> Batch:
    found, lines, problems = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = records.load_json(line.encode("utf-8", "surrogatepass"))
        except InvalidRequest as exc:
            problems.append(f"line {number}: {exc.message}")
            continue
        if not isinstance(document, dict):
            problems.append(f"line {number}: is not a JSON object.")
            continue
        found.append(document)
        lines.append(number)
    if problems:
        raise InputError(problems)
    return Batch(found, lines)


def _csv(text: str) -> Batch:
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if not header:
        raise InputError(["line 1: a CSV file needs a header row naming the fields."])
    found, lines, problems = [], [], []
    for row in rows:
        number = rows.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(
                f"line {number}: has {len(row)} cells; the header has {len(header)}."
            )
            continue
        found.append(
            {key: _cell(value) for key, value in zip(header, row, strict=True)}
        )
        lines.append(number)
    if problems:
        raise InputError(problems)
    return Batch(found, lines)


def _cell(text: str) -> Any:
    """A CSV cell as a value: numbers become numbers, empty cells null."""
    if text == "":
        return None
    if _INTEGER.fullmatch(text):
        return int(text)
    if _DECIMAL.fullmatch(text):
        value = float(text)
        return value if math.isfinite(value) else text
    return text


def _is_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
