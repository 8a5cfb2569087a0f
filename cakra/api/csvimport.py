"""Import camera captures from a CSV file, by the rules of the API, in chunks.

One row per capture::

    capture_id,camera_id,captured_at,location,latitude,longitude,plate,article,
    measured_speed_kmh,speed_limit_kmh,evidence

``evidence`` holds one to four image paths separated by ``;``; each may
carry a kind prefix (``plate:img/0042-plate.jpg``), otherwise the first is
the vehicle, the second the plate, the others the scene. Relative paths
resolve against the CSV's folder; no path may leave the evidence folder
(by default the CSV's folder), so a file received from elsewhere cannot make
the import read arbitrary files of the machine.

Rows are checked by the API's own input schema and received through the
same service as ``POST /api/v1/violations/batch``, in the name of an active
API key of the region: an import accepts, refuses, replays and pre-validates
exactly as the API does. The file is streamed, never loaded whole: at most
one chunk of rows (with their images) is in memory at a time.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
import structlog
from django.conf import settings

from cakra.api.intake import (
    CHUNK_SIZE,
    EVIDENCE_KINDS,
    MAX_EVIDENCE_ITEMS,
    EvidenceSubmission,
    ViolationSubmission,
    violations_receive,
)
from cakra.api.schemas import ViolationFieldsIn
from cakra.api.submissions import submission_from_fields
from cakra.enforcement.errors import ConflictError, DomainError

if TYPE_CHECKING:
    from cakra.api.models import ApiKey

logger = structlog.get_logger(__name__)

CSV_COLUMNS = (
    "capture_id",
    "camera_id",
    "captured_at",
    "location",
    "latitude",
    "longitude",
    "plate",
    "article",
    "measured_speed_kmh",
    "speed_limit_kmh",
    "evidence",
)
OPTIONAL_COLUMNS = frozenset({"latitude", "longitude", "measured_speed_kmh", "speed_limit_kmh"})
DEFAULT_KINDS = ("vehicle", "plate", "context", "context")
# A CSV field longer than this is not a capture; csv's own default (128 KiB) is too generous.
MAX_FIELD_CHARACTERS = 4096
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
_DISPLAY_LIMIT = 64


class CsvFileError(Exception):
    """The file as a whole cannot be imported (unreadable, not UTF-8, wrong header)."""


@dataclass(frozen=True)
class RowReject:
    """A refused row: ``line`` is where it starts in the file (the header is line 1)."""

    line: int
    capture_id: str
    code: str
    field: str
    reason: str


@dataclass
class ImportSummary:
    rows: int = 0
    created: int = 0
    replayed: int = 0
    rejected: int = 0


class _RowError(Exception):
    def __init__(self, *, code: str, field: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.field = field
        self.reason = reason


def printable(value: str, *, limit: int = _DISPLAY_LIMIT) -> str:
    """A value from the file made safe for a terminal: no control or escape characters, bounded length."""
    cleaned = _UNPRINTABLE.sub("?", value)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def _lines(handle: Any, on_bytes: Callable[[int], None]) -> Iterator[str]:
    """Decoded lines of a binary file, reporting the bytes consumed (the progress of the import)."""
    for number, raw in enumerate(handle, start=1):
        on_bytes(len(raw))
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CsvFileError(f"line {number} is not UTF-8 text") from exc
        yield text.removeprefix("\ufeff") if number == 1 else text


def _header(reader: Any) -> list[str]:
    try:
        names = [name.strip() for name in next(reader)]
    except StopIteration:
        raise CsvFileError("the file is empty (no header)") from None
    except csv.Error as exc:
        raise CsvFileError(f"line 1: {exc}") from exc
    missing = [name for name in CSV_COLUMNS if name not in names]
    unknown = [name for name in names if name not in CSV_COLUMNS]
    if missing or unknown or len(names) != len(set(names)):
        details = []
        if missing:
            details.append("missing: " + ", ".join(missing))
        if unknown:
            details.append("unknown: " + ", ".join(printable(name) for name in unknown))
        if len(names) != len(set(names)):
            details.append("a column is repeated")
        raise CsvFileError(f"the header must name the columns {','.join(CSV_COLUMNS)} ({'; '.join(details)})")
    return names


def _number(values: dict[str, str], name: str, kind: type[int | float]) -> int | float | None:
    text = values[name]
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        expected = "a whole number" if kind is int else "a number"
        raise _RowError(code="validation_error", field=name, reason=f"{name}: must be {expected}") from None


def _fields(values: dict[str, str]) -> ViolationFieldsIn:
    data: dict[str, Any] = {
        name: values[name] for name in CSV_COLUMNS if name not in OPTIONAL_COLUMNS and name != "evidence"
    }
    data["latitude"] = _number(values, "latitude", float)
    data["longitude"] = _number(values, "longitude", float)
    data["measured_speed_kmh"] = _number(values, "measured_speed_kmh", int)
    data["speed_limit_kmh"] = _number(values, "speed_limit_kmh", int)
    try:
        return ViolationFieldsIn.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "row"
        code = "invalid_plate" if first["type"] == "invalid_plate" else "validation_error"
        raise _RowError(code=code, field=field, reason=f"{field}: {first['msg']}") from None


def _evidence(text: str, *, base: Path, root: Path) -> tuple[EvidenceSubmission, ...]:
    paths = [part.strip() for part in text.split(";") if part.strip()]
    if not 1 <= len(paths) <= MAX_EVIDENCE_ITEMS:
        raise _RowError(
            code="validation_error", field="evidence", reason="evidence: one to four image paths separated by ';'"
        )
    items = []
    for position, entry in enumerate(paths):
        field = f"evidence[{position}]"
        prefix, separator, rest = entry.partition(":")
        kind, name = (
            (prefix, rest.strip()) if separator and prefix in EVIDENCE_KINDS else (DEFAULT_KINDS[position], entry)
        )
        path = (base / name).resolve()
        if not path.is_relative_to(root):
            raise _RowError(code="invalid_path", field=field, reason=f"{field}: the path leaves the evidence folder")
        if not path.is_file():
            raise _RowError(code="file_not_found", field=field, reason=f"{field}: no such image file")
        # Checked before reading: a huge file is never loaded to be refused.
        if path.stat().st_size > settings.CAKRA_EVIDENCE_MAX_BYTES:
            raise _RowError(
                code="image_too_large",
                field=field,
                reason=f"{field}: the image is larger than {settings.CAKRA_EVIDENCE_MAX_BYTES} bytes",
            )
        try:
            content = path.read_bytes()
        except OSError:
            raise _RowError(code="file_unreadable", field=field, reason=f"{field}: the image cannot be read") from None
        items.append(EvidenceSubmission(kind=kind, content=content))
    return tuple(items)


def _records(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """(line where it starts, fields) of every row that is not blank."""
    while True:
        line = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise CsvFileError(f"line {line}: {exc}") from exc
        if any(value.strip() for value in record):
            yield line, record


def _row_submission(record: list[str], *, header: list[str], base: Path, root: Path) -> ViolationSubmission:
    if len(record) != len(header):
        raise _RowError(
            code="invalid_row", field="row", reason=f"row: {len(record)} fields where the header names {len(header)}"
        )
    if any(len(value) > MAX_FIELD_CHARACTERS for value in record):
        raise _RowError(code="invalid_row", field="row", reason="row: a field is too long")
    values = {name: value.strip() for name, value in zip(header, record, strict=True)}
    fields = _fields(values)
    return submission_from_fields(fields=fields, evidence=_evidence(values["evidence"], base=base, root=root))


def _reject_of(*, line: int, capture_id: str, error: DomainError) -> RowReject:
    code = "conflict" if isinstance(error, ConflictError) else error.code
    # The service names the field as the API would ("evidence[0].content_base64"): say "evidence[0]".
    field = error.field.replace(".content_base64", "")
    return RowReject(line=line, capture_id=capture_id, code=code, field=field, reason=f"{field}: {error.message}")


class _Chunks:
    """Rows waiting for the service, received one chunk at a time; refusals reported in file order."""

    def __init__(
        self,
        *,
        api_key: ApiKey,
        chunk_size: int,
        on_reject: Callable[[RowReject], None],
        on_chunk: Callable[[ImportSummary], None],
    ) -> None:
        self.api_key = api_key
        self.chunk_size = chunk_size
        self.on_reject = on_reject
        self.on_chunk = on_chunk
        self.summary = ImportSummary()
        self.pending: list[tuple[int, ViolationSubmission]] = []
        # Rows refused before the service wait for their chunk, to be reported in file order.
        self.refused: list[RowReject] = []

    def add(self, line: int, submission: ViolationSubmission) -> None:
        self.summary.rows += 1
        self.pending.append((line, submission))
        self._flush_if_full()

    def refuse(self, reject: RowReject) -> None:
        self.summary.rows += 1
        self.refused.append(reject)
        self._flush_if_full()

    def _flush_if_full(self) -> None:
        if len(self.pending) + len(self.refused) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending and not self.refused:
            return
        submissions = [submission for _, submission in self.pending]
        outcomes = violations_receive(api_key=self.api_key, submissions=submissions) if submissions else []
        for (line, submission), outcome in zip(self.pending, outcomes, strict=True):
            if outcome.result is None:
                assert outcome.error is not None  # noqa: S101 - an outcome is a result or an error
                self.refused.append(_reject_of(line=line, capture_id=submission.capture_id, error=outcome.error))
            elif outcome.result.created:
                self.summary.created += 1
            else:
                self.summary.replayed += 1
        self.summary.rejected += len(self.refused)
        for reject in sorted(self.refused, key=lambda reject: reject.line):
            self.on_reject(reject)
        self.pending.clear()
        self.refused.clear()
        self.on_chunk(self.summary)


def violation_import_csv(
    *,
    api_key: ApiKey,
    path: Path,
    evidence_root: Path | None = None,
    on_reject: Callable[[RowReject], None],
    on_bytes: Callable[[int], None] = lambda _: None,
    on_chunk: Callable[[ImportSummary], None] = lambda _: None,
    chunk_size: int = CHUNK_SIZE,
) -> ImportSummary:
    """Import every row of ``path`` in the name of ``api_key``; return the counts.

    Refused rows are passed to ``on_reject`` chunk by chunk, in file order
    (the caller prints or writes them; nothing accumulates here). ``on_bytes``
    receives the bytes read, ``on_chunk`` the running counts after each chunk.
    Raises CsvFileError for a file that cannot be imported at all (before
    anything is stored if its header is wrong); a database or storage
    failure raises as is, after the chunks before it were stored (importing
    the file again is safe: stored rows come back as replays).
    """
    base = path.resolve().parent
    root = (evidence_root or base).resolve()
    chunks = _Chunks(api_key=api_key, chunk_size=chunk_size, on_reject=on_reject, on_chunk=on_chunk)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise CsvFileError(f"cannot open the file: {exc.strerror}") from exc
    with handle:
        reader = csv.reader(_lines(handle, on_bytes), strict=True)
        header = _header(reader)
        capture_column = header.index("capture_id")
        for line, record in _records(reader):
            try:
                submission = _row_submission(record, header=header, base=base, root=root)
            except _RowError as exc:
                capture_id = printable(record[capture_column].strip()) if capture_column < len(record) else ""
                chunks.refuse(
                    RowReject(line=line, capture_id=capture_id, code=exc.code, field=exc.field, reason=exc.reason)
                )
            else:
                chunks.add(line, submission)
        chunks.flush()
    summary = chunks.summary
    logger.info(
        "violation.import_finished",
        api_key=api_key.prefix,
        region=api_key.region.code,
        rows=summary.rows,
        created=summary.created,
        replayed=summary.replayed,
        rejected=summary.rejected,
    )
    return summary
