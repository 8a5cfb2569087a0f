"""CSV files the project writes for people never carry a cell a spreadsheet would run (CSV injection)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from django.core.management import call_command

import cakra
from cakra.api.csvimport import CSV_COLUMNS
from cakra.security.csvsafe import csv_cell_neutralise, csv_writer_safe
from tests.api.helpers import jpeg_bytes, payload

FORMULAS = [
    '=HYPERLINK("http://x","y")',
    "@SUM(1)",
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "\t=1+1",
    "\r=1+1",
]


def test_a_rejects_file_neutralises_every_formula_cell(tmp_path, api_key, vehicle):
    key, _ = api_key
    (tmp_path / "v.jpg").write_bytes(jpeg_bytes(size=(64, 48)))
    good = payload()
    source = tmp_path / "captures.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for capture_id in FORMULAS:
            values = {name: good.get(name, "") for name in CSV_COLUMNS}
            values.update(capture_id=capture_id, latitude="", longitude="", evidence="v.jpg")
            writer.writerow(values)
    rejects = tmp_path / "rejects.csv"

    call_command(
        "import",
        "violations",
        str(source),
        "--api-key-prefix",
        key.prefix,
        "--rejects",
        str(rejects),
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )

    with rejects.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["line", "capture_id", "code", "field", "reason"]
    assert len(rows) == 1 + len(FORMULAS)
    capture_ids = [row[1] for row in rows[1:]]
    assert capture_ids[0] == "'" + FORMULAS[0]
    assert capture_ids[1] == "'@SUM(1)"
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row


def test_the_writer_neutralises_text_cells_and_leaves_numbers_alone():
    out = io.StringIO()

    csv_writer_safe(out).writerows([["=1+1", "@A1", "plain", -5, 3.5, "", "a=b"]])

    assert next(csv.reader(io.StringIO(out.getvalue()))) == ["'=1+1", "'@A1", "plain", "-5", "3.5", "", "a=b"]
    assert csv_cell_neutralise("-") == "'-"
    assert csv_cell_neutralise(None) is None


def test_no_module_writes_csv_around_the_safe_writer():
    """The lint rule (TID251) holds this too; this keeps it true when ruff is not run."""
    package = Path(cakra.__file__).parent
    raw = re.compile(r"\bcsv\.(writer|DictWriter)\b|from csv import .*\b(writer|DictWriter)\b")
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "csvsafe.py" and raw.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
