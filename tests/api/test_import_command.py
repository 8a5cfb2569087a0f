"""``cakra import violations FILE.csv``: rows through the batch service, a summary of rejects."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from cakra.api import intake
from cakra.api.csvimport import CSV_COLUMNS
from cakra.api.services import apikey_revoke
from cakra.enforcement.models import Evidence, Notice, Violation
from tests.api.helpers import StoreSnapshot, image_bytes, jpeg_bytes, payload, post

CAPTURED_AT = timezone.localtime(timezone.now() - timedelta(hours=3)).isoformat()
VEHICLE_JPEG = jpeg_bytes(size=(96, 64))
PLATE_PNG = image_bytes("PNG", size=(80, 20))


class TtyStream(io.StringIO):
    def isatty(self):
        return True


def row(capture_id, **overrides):
    values = {
        "capture_id": capture_id,
        "camera_id": "CAM-SUDIRMAN-03",
        "captured_at": CAPTURED_AT,
        "location": "Jl. Jend. Sudirman (arah Blok M), Jakarta Selatan",
        "latitude": "-6.224524",
        "longitude": "106.807145",
        "plate": "B 1234 XYZ",
        "article": "287(1)",
        "measured_speed_kmh": "",
        "speed_limit_kmh": "",
        "evidence": "img/vehicle.jpg",
    }
    values.update(overrides)
    return values


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    (images / "vehicle.jpg").write_bytes(VEHICLE_JPEG)
    (images / "plate.png").write_bytes(PLATE_PNG)
    (images / "other.jpg").write_bytes(jpeg_bytes(size=(96, 64), colour=(10, 20, 30)))
    return tmp_path


def write_csv(folder, rows, *, columns=CSV_COLUMNS, name="captures.csv", bom=False):
    path = folder / name
    with path.open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_import(path, key, *extra, stderr=None):
    out, err = io.StringIO(), stderr if stderr is not None else io.StringIO()
    call_command("import", "violations", str(path), "--api-key-prefix", key.prefix, *extra, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_rows_are_stored_with_their_images_and_summarised(folder, api_key, vehicle):
    key, _ = api_key
    rows = [
        row("CSV-1"),
        row(
            "CSV-2",
            evidence="img/vehicle.jpg; plate:img/plate.png",
            article="287(5)",
            measured_speed_kmh="92",
            speed_limit_kmh="60",
        ),
        row(
            "CSV-3", location="Jl. Gatot Subroto, Jakarta", latitude="", longitude="", evidence="context:img/other.jpg"
        ),
    ]
    path = write_csv(folder, rows)

    out, err = run_import(path, key)

    assert "rows:     3" in out
    assert "created:  3" in out
    assert "replayed: 0" in out
    assert "rejected: 0" in out
    assert "Rejected rows" not in out
    assert err == ""  # not a terminal: no progress bar
    stored = {v.capture_id: v for v in Violation.objects.filter(capture_id__startswith="CSV-")}
    assert set(stored) == {"CSV-1", "CSV-2", "CSV-3"}
    assert all(v.source_key_id == key.id and v.region_id == key.region_id for v in stored.values())
    assert stored["CSV-1"].vehicle_id == vehicle.id
    assert str(stored["CSV-1"].latitude) == "-6.224524"
    assert (stored["CSV-2"].measured_speed_kmh, stored["CSV-2"].speed_limit_kmh) == (92, 60)
    assert stored["CSV-3"].latitude is None
    evidence = list(Evidence.objects.filter(violation=stored["CSV-2"]).order_by("position"))
    assert [(e.kind, e.content_type) for e in evidence] == [("vehicle", "image/jpeg"), ("plate", "image/png")]
    for row_evidence, content in zip(evidence, (VEHICLE_JPEG, PLATE_PNG), strict=True):
        with row_evidence.original.open("rb") as handle:
            assert handle.read() == content
        assert row_evidence.original_sha256 == hashlib.sha256(content).hexdigest()
    assert Evidence.objects.get(violation=stored["CSV-3"]).kind == "context"


def test_rejected_rows_are_listed_with_line_capture_id_and_reason(folder, api_key, vehicle):
    key, _ = api_key
    store = StoreSnapshot()
    rows = [
        row("GOOD-1"),
        row("BAD-PLATE", plate="not a plate"),
        row("BAD-ARTICLE", article="999(9)"),
        row("NO-IMAGE", evidence="img/missing.jpg"),
        row("OUTSIDE", evidence="../secret.jpg"),
        row("BAD-LAT", latitude="south"),
        row("GOOD-1", location="somewhere else"),  # same capture id, other content
        row("GOOD-1"),  # the same capture again: a replay
        row("NOT-IMAGE", evidence="captures.csv"),
        row("GOOD-2", evidence="img/other.jpg"),
    ]
    path = write_csv(folder, rows)
    (folder.parent / "secret.jpg").write_bytes(VEHICLE_JPEG)

    out, _ = run_import(path, key)

    assert "rows:     10" in out
    assert "created:  2" in out
    assert "replayed: 1" in out
    assert "rejected: 7" in out
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("line ")]
    assert lines == [
        "line 3  BAD-PLATE  plate: not an Indonesian registration plate (e.g. B 1234 XYZ)",
        "line 4  BAD-ARTICLE  article: unknown article code (e.g. 287(1))",
        "line 5  NO-IMAGE  evidence[0]: no such image file",
        "line 6  OUTSIDE  evidence[0]: the path leaves the evidence folder",
        "line 7  BAD-LAT  latitude: must be a number",
        "line 8  GOOD-1  capture_id: this capture_id was already received with different content",
        "line 10  NOT-IMAGE  evidence[0]: the image must be a JPEG or PNG file",
    ]
    # Only the good rows were stored; the refused ones left no row and no file.
    assert set(Violation.objects.values_list("capture_id", flat=True)) == {"GOOD-1", "GOOD-2"}
    assert Evidence.objects.count() == store.before[1] + 2


def test_rejects_file_holds_every_rejected_row(folder, api_key, vehicle):
    key, _ = api_key
    path = write_csv(folder, [row("OK"), row("BAD", plate="??"), row("GONE", evidence="img/nope.jpg")])
    rejects = folder / "rejects.csv"

    out, _ = run_import(path, key, "--rejects", str(rejects))

    assert f"Rejected rows written to {rejects}." in out
    with rejects.open(newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert [(r["line"], r["capture_id"], r["code"], r["field"]) for r in written] == [
        ("3", "BAD", "invalid_plate", "plate"),
        ("4", "GONE", "file_not_found", "evidence[0]"),
    ]
    assert all(r["reason"] for r in written)


def test_a_missing_image_rejects_only_its_row(folder, api_key, vehicle):
    key, _ = api_key
    path = write_csv(folder, [row("A"), row("B", evidence="img/vehicle.jpg;img/lost.jpg"), row("C")])

    out, _ = run_import(path, key)

    assert "created:  2" in out
    assert "line 3  B  evidence[1]: no such image file" in out
    assert set(Violation.objects.values_list("capture_id", flat=True)) == {"A", "C"}


@pytest.mark.parametrize(
    "columns",
    [
        CSV_COLUMNS[:-1],  # evidence missing
        (*CSV_COLUMNS, "notes"),  # unknown column
        ("capture_id", *CSV_COLUMNS),  # repeated column
    ],
)
def test_a_wrong_header_stops_before_anything_is_stored(folder, api_key, vehicle, columns):
    key, _ = api_key
    store = StoreSnapshot()
    path = folder / "wrong.csv"
    path.write_text(",".join(columns) + "\n" + ",".join("x" for _ in columns) + "\n", encoding="utf-8")

    with pytest.raises(CommandError, match="header must name the columns"):
        run_import(path, key)
    store.assert_unchanged()


def test_file_level_errors_are_command_errors(folder, api_key, region, other_region):
    key, _ = api_key
    path = write_csv(folder, [row("X")])
    empty = folder / "empty.csv"
    empty.write_bytes(b"")
    latin1 = folder / "latin1.csv"
    latin1.write_bytes(",".join(CSV_COLUMNS).encode() + b"\nCAP,\xe9\n")

    with pytest.raises(CommandError, match="no such file"):
        run_import(folder / "absent.csv", key)
    with pytest.raises(CommandError, match="empty"):
        run_import(empty, key)
    with pytest.raises(CommandError, match="not UTF-8"):
        run_import(latin1, key)
    with pytest.raises(CommandError, match="belongs to region METRO"):
        run_import(path, key, "--region", other_region.code)
    with pytest.raises(CommandError, match="must not be the file being imported"):
        run_import(path, key, "--rejects", str(path))
    apikey_revoke(prefix=key.prefix)
    with pytest.raises(CommandError, match="no active API key"):
        run_import(path, key)
    assert not Violation.objects.exists()


def test_importing_twice_replays_and_api_captures_are_the_same_captures(client, folder, api_key, vehicle):
    """Same normalised values whichever way a capture arrives: the API's capture imported later is a replay."""
    key, token = api_key
    api_item = payload(capture_id="BOTH", captured_at=CAPTURED_AT, images=[("vehicle", VEHICLE_JPEG)])
    assert post(client, token, api_item).status_code == 201
    path = write_csv(folder, [row("BOTH", plate="b1234xyz"), row("CSV-ONLY")])

    first, _ = run_import(path, key)
    second, _ = run_import(path, key)

    assert "created:  1" in first
    assert "replayed: 1" in first
    assert "created:  0" in second
    assert "replayed: 2" in second
    assert Violation.objects.count() == 2


def test_a_pre_validated_key_issues_notices(folder, pre_validated_key, vehicle, django_capture_on_commit_callbacks):
    key, _ = pre_validated_key
    path = write_csv(folder, [row("PV-1"), row("PV-2", plate="B 9 ZZ")])

    with django_capture_on_commit_callbacks(execute=False):
        out, _ = run_import(path, key)

    assert "created:  2" in out
    matched = Violation.objects.get(capture_id="PV-1")
    assert matched.status == Violation.Status.VALIDATED
    assert Notice.objects.filter(violation=matched).exists()
    # No registry match: waits for an officer, as on the API.
    assert Violation.objects.get(capture_id="PV-2").status == Violation.Status.RECEIVED
    assert Notice.objects.count() == 1


def test_the_file_is_processed_in_chunks(folder, api_key, vehicle, monkeypatch):
    key, _ = api_key
    chunks = []
    real = intake.violations_receive

    def recording(**kwargs):
        chunks.append(len(kwargs["submissions"]))
        return real(**kwargs)

    monkeypatch.setattr("cakra.api.csvimport.violations_receive", recording)
    path = write_csv(folder, [row(f"CHUNK-{n}") for n in range(5)] + [row("BAD", plate="??"), row("CHUNK-5")])

    out, _ = run_import(path, key, "--chunk-size", "2")

    # A refused row takes its place in a chunk too (its report waits for the chunk, in file order).
    assert chunks == [2, 2, 1, 1]
    assert "created:  6" in out
    assert "rejected: 1" in out


def test_excel_style_files_blank_lines_and_quoted_commas_are_read(folder, api_key, vehicle):
    key, _ = api_key
    path = write_csv(folder, [row("Q-1", location="Jl. Sudirman, Jakarta Selatan")], bom=True)
    with path.open("a", encoding="utf-8", newline="") as handle:
        handle.write("\r\n")
        csv.DictWriter(handle, fieldnames=CSV_COLUMNS).writerow(row("Q-2"))

    out, _ = run_import(path, key)

    assert "created:  2" in out
    assert Violation.objects.get(capture_id="Q-1").location == "Jl. Sudirman, Jakarta Selatan"


def test_values_from_the_file_cannot_drive_the_terminal(folder, api_key, vehicle):
    key, _ = api_key
    path = write_csv(folder, [row("EVIL\x1b[2J\x07", plate="??")])

    out, _ = run_import(path, key)

    assert "\x1b" not in out
    assert "\x07" not in out
    assert "line 2  EVIL?[2J?" in out


def test_a_progress_bar_shows_on_a_terminal_unless_disabled(folder, api_key, vehicle):
    key, _ = api_key
    path = write_csv(folder, [row("P-1"), row("P-2")])

    _, shown = run_import(path, key, stderr=TtyStream())
    _, hidden = run_import(path, key, "--no-progress", stderr=TtyStream())

    assert "captures.csv" in shown
    assert "\r" in shown
    assert hidden == ""


def test_a_storage_failure_stops_the_import_with_advice(folder, api_key, vehicle, monkeypatch):
    key, _ = api_key
    path = write_csv(folder, [row("S-1"), row("S-2")])

    def disk_full(**kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(intake, "evidence_store_originals_rollback_unsafe", disk_full)
    with pytest.raises(CommandError, match="Run the same import again"):
        run_import(path, key)
    assert not Violation.objects.exists()


def test_the_help_documents_columns_and_exit_status(capsys):
    with pytest.raises(SystemExit) as exited:
        call_command("import", "violations", "--help")
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "measured_speed_kmh" in text
    assert "Exit status: 0" in text
    assert json.dumps("--rejects")[1:-1] in text
