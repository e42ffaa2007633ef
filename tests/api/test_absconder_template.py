"""The absconder reporting template (GET /api/v1/reports/absconders/monthly) on a month of cases
worked out by hand: JSON and CSV, region scoping of the columns and of the national roll-up,
the month's time zone setting, the audit row, and the PDF (a page per region and a national one,
turned into images with pdftoppm and looked at).

Cases are written straight into ``absconder_cases`` (store.absconder_reports.insert_case_row):
opening them from absconder alerts, and the case API, are another part of issue 16.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.requests import Request

from tagwatch.alerts.absconder_template import Period, RegionName, template
from tagwatch.api.absconder_pdf import CHART_BOX, render_pdf
from tagwatch.api.app import create_app
from tagwatch.api.routes.reports import template_format
from tagwatch.api.security import issue_token
from tagwatch.store.absconder_reports import insert_case_row
from tests.console.harness import ARTIFACTS
from tests.support import fresh_id

pytestmark = pytest.mark.integration

PATH = "/api/v1/reports/absconders/monthly"
NOVEMBER = {"month": "2026-11"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def month(settings) -> dict[str, Any]:
    """November 2026 (UTC), worked out by hand.

    Region A, cases (opened -> traced (outcome), closed):

    =====  ==============  ================  ===============================  ============
    case   cause           opened            traced                           closed
    =====  ==============  ================  ===============================  ============
    A1     strap_tamper    10-20 10:00       11-03 10:00 returned             11-05
    A2     silence         10-25 00:00       -                                -
    A3     inclusion_exit  11-10 12:00       11-12 00:00 arrested             -
    A4     declared        11-28 06:00       -                                -
    A5     strap_tamper    09-01             09-10 other                      11-15
    A6     silence         11-30 23:00       12-02 deceased                   -
    A7     strap_tamper    12-01 00:00       -                                -
    A8     silence         10-01             11-01 00:00 returned             -
    =====  ==============  ================  ===============================  ============

    * opening (outstanding at 11-01 00:00): A1, A2, A8 (traced at the very start: still out
      then) = 3; new: A3, A4, A6 = 3 (silence 1, inclusion_exit 1, declared 1; A7 opens at the
      month's end, which is December's); traced: A8, A1, A3 = 3 (returned 2, arrested 1);
      closed: A1, A5 = 2; closing (outstanding at 12-01 00:00): A2, A4, A6 = 3 = 3 + 3 - 3.
    * days at large (traced in the month): A1 14, A3 1.5, A8 31 -> median 14, mean 15.5.
    * days outstanding at 12-01: A2 37, A4 2.75, A6 1/24 -> median 2.75, mean 13.264.
    * monitored: s1 (tag all year), s2 (10-01 to 11-10), s3 (from 11-30 12:00), s6 (all
      year), m (moves to B on 11-15) = 5; s4 (tag until 10-31) and v (a victim's phone) do not
      count. Rate 3 * 1000 / 5 = 600.

    Region B: B1 strap_tamper opened 11-05 00:00, outstanding: new 1, closing 1, days
    outstanding 26; B2 traced in October and never closed: nothing. Monitored b1 and m = 2,
    rate 500.

    National (A and B): opening 3, new 4, traced 3, closed 2, closing 4; days at large as A;
    days outstanding 37, 2.75, 1/24, 26 -> median 14.375, mean 16.448; monitored 6 (m once),
    rate 4 * 1000 / 6 = 666.67.

    Region C (nobody's here but the admin's): C1 opened 11-02, outstanding; c1 monitored.
    """
    url = settings.database_url
    a, b, c = fresh_id("abt-a"), fresh_id("abt-b"), fresh_id("abt-c")
    with psycopg.connect(url) as conn:
        for region in (a, b, c):
            conn.execute("INSERT INTO regions (id, name) VALUES (%s, %s)", (region, region))

        def subject(region: str, name: str) -> int:
            row = conn.execute(
                "INSERT INTO subjects (name, region_id) VALUES (%s, %s) RETURNING id",
                (name, region),
            ).fetchone()
            assert row is not None
            return int(row[0])

        def holds(subject_id: int, start: str, end: str | None, role: str = "offender") -> None:
            device = fresh_id("abt-tag")
            conn.execute("INSERT INTO devices (id, kind) VALUES (%s, 'tag')", (device,))
            conn.execute(
                "INSERT INTO device_assignments (device_id, subject_id, role, during)"
                " VALUES (%s, %s, %s, tstzrange(%s, %s))",
                (device, subject_id, role, at(start), end and at(end)),
            )

        s1, s2, s3, s4, s6, v, m = (subject(a, n) for n in ("s1", "s2", "s3", "s4", "s6", "v", "m"))
        b1, c1 = subject(b, "b1"), subject(c, "c1")
        holds(s1, "2026-01-01T00:00:00Z", None)
        holds(s2, "2026-10-01T00:00:00Z", "2026-11-10T00:00:00Z")
        holds(s3, "2026-11-30T12:00:00Z", None)
        holds(s4, "2026-01-01T00:00:00Z", "2026-10-31T23:59:00Z")
        holds(s6, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z")
        holds(v, "2026-01-01T00:00:00Z", None, role="victim")
        holds(m, "2026-06-01T00:00:00Z", None)
        holds(b1, "2026-10-15T00:00:00Z", None)
        holds(c1, "2026-01-01T00:00:00Z", None)
        # m moved from A to B on 11-15 (the history a move records, dated by hand)
        conn.execute("DELETE FROM subject_regions WHERE subject_id = %s", (m,))
        conn.execute(
            "INSERT INTO subject_regions (subject_id, region_id, during) VALUES"
            " (%s, %s, tstzrange(NULL, %s)), (%s, %s, tstzrange(%s, NULL))",
            (m, a, at("2026-11-15T00:00:00Z"), m, b, at("2026-11-15T00:00:00Z")),
        )
        for subject_id, region, cause, opened, traced, outcome, closed in [
            (s1, a, "strap_tamper", "2026-10-20T10:00Z", "2026-11-03T10:00Z",
             "returned_to_supervision", "2026-11-05T00:00Z"),
            (s2, a, "silence", "2026-10-25T00:00Z", None, None, None),
            (s3, a, "inclusion_exit", "2026-11-10T12:00Z", "2026-11-12T00:00Z", "arrested", None),
            (s1, a, "declared", "2026-11-28T06:00Z", None, None, None),
            (s4, a, "strap_tamper", "2026-09-01T00:00Z", "2026-09-10T00:00Z", "other",
             "2026-11-15T00:00Z"),
            (s3, a, "silence", "2026-11-30T23:00Z", "2026-12-02T00:00Z", "deceased", None),
            (s4, a, "strap_tamper", "2026-12-01T00:00Z", None, None, None),
            (s2, a, "silence", "2026-10-01T00:00Z", "2026-11-01T00:00Z",
             "returned_to_supervision", None),
            (b1, b, "strap_tamper", "2026-11-05T00:00Z", None, None, None),
            (b1, b, "silence", "2026-08-01T00:00Z", "2026-10-01T00:00Z", "arrested", None),
            (c1, c, "silence", "2026-11-02T00:00Z", None, None, None),
        ]:  # fmt: skip
            insert_case_row(
                conn,
                subject_id,
                region,
                cause,
                at(opened),
                traced and at(traced),
                outcome,
                closed and at(closed),
            )
    return {"a": a, "b": b, "c": c}


CAUSES_A = {"strap_tamper": 0, "silence": 1, "inclusion_exit": 1, "declared": 1}
OUTCOMES_A = {"returned_to_supervision": 2, "arrested": 1, "deceased": 0, "other": 0}
EXPECTED_A = {
    "opening_balance": 3,
    "new": 3,
    "new_by_cause": CAUSES_A,
    "traced": 3,
    "traced_by_outcome": OUTCOMES_A,
    "closed": 2,
    "closing_balance": 3,
    "days_at_large_median": 14.0,
    "days_at_large_mean": 15.5,
    "days_outstanding_median": 2.75,
    "days_outstanding_mean": 13.264,
    "monitored_subjects": 5,
    "absconding_rate_per_1000": 600.0,
}
EXPECTED_B = {
    "opening_balance": 0,
    "new": 1,
    "new_by_cause": {"strap_tamper": 1, "silence": 0, "inclusion_exit": 0, "declared": 0},
    "traced": 0,
    "traced_by_outcome": dict.fromkeys(OUTCOMES_A, 0),
    "closed": 0,
    "closing_balance": 1,
    "days_at_large_median": None,
    "days_at_large_mean": None,
    "days_outstanding_median": 26.0,
    "days_outstanding_mean": 26.0,
    "monitored_subjects": 2,
    "absconding_rate_per_1000": 500.0,
}
EXPECTED_NATIONAL = {
    "opening_balance": 3,
    "new": 4,
    "new_by_cause": {**CAUSES_A, "strap_tamper": 1},
    "traced": 3,
    "traced_by_outcome": OUTCOMES_A,
    "closed": 2,
    "closing_balance": 4,
    "days_at_large_median": 14.0,
    "days_at_large_mean": 15.5,
    "days_outstanding_median": 14.375,
    "days_outstanding_mean": 16.448,
    "monitored_subjects": 6,
    "absconding_rate_per_1000": 666.67,
}


@pytest.fixture(scope="module")
def as_(settings):
    """A user of the role and regions, with a token issued directly: the login route (and its
    password hashing, half a second a time) is not what these tests are about."""
    cache: dict[tuple[str, tuple[str, ...]], dict[str, str]] = {}

    def headers(role: str, regions: list[str]) -> dict[str, str]:
        key = (role, tuple(regions))
        if key not in cache:
            with psycopg.connect(settings.database_url) as conn:
                row = conn.execute(
                    "INSERT INTO users (username, password_hash, role, regions)"
                    " VALUES (%s, 'no-login', %s, %s) RETURNING id",
                    (fresh_id(f"abt-{role}"), role, regions),
                ).fetchone()
            assert row is not None
            token, _ = issue_token(int(row[0]), settings.secret_key, 30)
            cache[key] = {"Authorization": f"Bearer {token}"}
        return cache[key]

    return headers


def figures_of(column: dict[str, Any]) -> dict[str, Any]:
    return {k: column[k] for k in EXPECTED_A}


def test_the_hand_computed_month_as_json(api, month, as_):
    a, b = month["a"], month["b"]
    response = api.get(PATH, params=NOVEMBER, headers=as_("supervisor", [a, b]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["month"], body["timezone"], body["complete"]) == ("2026-11", "UTC", True)
    assert body["period_start"] == "2026-11-01T00:00:00Z"
    assert body["period_end"] == "2026-12-01T00:00:00Z"
    assert [r["region"] for r in body["regions"]] == sorted([a, b])
    columns = {r["region"]: r for r in body["regions"]}
    assert figures_of(columns[a]) == EXPECTED_A
    assert figures_of(columns[b]) == EXPECTED_B
    national = body["national"]
    assert figures_of(national) == EXPECTED_NATIONAL
    assert national["regions_included"] == sorted([a, b])
    assert national["scope"] == "your regions" and national["name"] == "National"
    # day by day in A: A8 traced on the 1st (A1, A2 still out), A1 traced on the 3rd (A2
    # alone), A6 opened on the 30th (A2, A4, A6 at the end)
    daily = columns[a]["daily"]
    assert len(daily) == 30
    assert daily[0] == {"date": "2026-11-01", "new": 0, "traced": 1, "outstanding": 2}
    assert daily[2] == {"date": "2026-11-03", "new": 0, "traced": 1, "outstanding": 1}
    assert daily[29] == {"date": "2026-11-30", "new": 1, "traced": 0, "outstanding": 3}


def test_the_same_month_as_csv(api, month, as_):
    a, b = month["a"], month["b"]
    headers = {**as_("supervisor", [a, b]), "Accept": "text/csv"}
    response = api.get(PATH, params=NOVEMBER, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="absconders-monthly-2026-11.csv"' in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["region"] for r in rows] == [*sorted([a, b]), ""]
    by_region = {r["region"]: r for r in rows}
    row_a, row_b, national = by_region[a], by_region[b], by_region[""]
    assert national["name"] == "National"
    assert (row_a["month"], row_a["timezone"], row_a["complete"]) == ("2026-11", "UTC", "true")
    expected_a = {
        "opening_balance": "3", "new": "3", "new_by_cause.strap_tamper": "0",
        "new_by_cause.silence": "1", "new_by_cause.inclusion_exit": "1",
        "new_by_cause.declared": "1", "traced": "3",
        "traced_by_outcome.returned_to_supervision": "2", "traced_by_outcome.arrested": "1",
        "traced_by_outcome.deceased": "0", "traced_by_outcome.other": "0", "closed": "2",
        "closing_balance": "3", "days_at_large_median": "14.0", "days_at_large_mean": "15.5",
        "days_outstanding_median": "2.75", "days_outstanding_mean": "13.264",
        "monitored_subjects": "5", "absconding_rate_per_1000": "600.0",
    }  # fmt: skip
    assert {k: row_a[k] for k in expected_a} == expected_a
    assert (row_b["new"], row_b["closing_balance"], row_b["days_at_large_median"]) == (
        "1",
        "1",
        "",
    )
    assert (national["new"], national["closing_balance"]) == ("4", "4")
    assert national["days_outstanding_median"] == "14.375"
    assert national["absconding_rate_per_1000"] == "666.67"
    # ?format=csv says the same
    again = api.get(PATH, params={**NOVEMBER, "format": "csv"}, headers=as_("supervisor", [a, b]))
    assert again.text == response.text


def test_regions_and_the_roll_up_are_the_callers(api, month, as_):
    a, b, c = month["a"], month["b"], month["c"]
    # an operator of A: A alone, and a national column of A alone
    body = api.get(PATH, params=NOVEMBER, headers=as_("operator", [a])).json()
    assert [r["region"] for r in body["regions"]] == [a]
    assert figures_of(body["national"]) == EXPECTED_A
    # B asked for by name answers as a region that does not exist
    other = api.get(PATH, params={**NOVEMBER, "region": b}, headers=as_("operator", [a]))
    missing = api.get(PATH, params={**NOVEMBER, "region": "abt-none"}, headers=as_("operator", [a]))
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"].replace(b, "X") == missing.json()["detail"].replace(
        "abt-none", "X"
    )
    # an admin of every region sees C too, and may narrow to one region
    admin = as_("admin", ["*"])
    everything = api.get(PATH, params=NOVEMBER, headers=admin).json()
    assert {a, b, c} <= {r["region"] for r in everything["regions"]}
    assert everything["national"]["scope"] == "every region"
    only_b = api.get(PATH, params={**NOVEMBER, "region": b}, headers=admin).json()
    assert [r["region"] for r in only_b["regions"]] == [b]
    assert only_b["national"]["scope"] == f"region {b}"
    assert figures_of(only_b["national"]) == EXPECTED_B
    # tracers do not get the template
    assert api.get(PATH, params=NOVEMBER, headers=as_("tracer", [a])).status_code == 403


def test_bad_months_are_refused(api, month, as_):
    headers = as_("supervisor", [month["a"]])
    for bad in ("2026-13", "2026-1", "26-11", "November"):
        assert api.get(PATH, params={"month": bad}, headers=headers).status_code == 422, bad
    assert api.get(PATH, headers=headers).status_code == 422


def test_the_read_is_audited(api, month, as_, settings):
    a, b = month["a"], month["b"]
    reason = fresh_id("monthly-board")
    response = api.get(
        PATH, params={**NOVEMBER, "reason": reason}, headers=as_("supervisor", [a, b])
    )
    assert response.status_code == 200
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT role, action, subject_id, detail FROM audit_log WHERE detail->>'reason' = %s",
            (reason,),
        ).fetchone()
    assert row is not None
    role, action, subject_id, detail = row
    assert (role, action, subject_id) == ("supervisor", "report_absconders_monthly", None)
    assert detail["month"] == "2026-11" and detail["regions"] == sorted([a, b])
    assert detail["format"] == "json" and detail["timezone"] == "UTC"


def test_months_in_the_time_zone_the_setting_names(month, as_, settings):
    """In Johannesburg (UTC+2) November starts 10-31 22:00 UTC and ends 11-30 22:00 UTC: A6
    (11-30 23:00 UTC) is December's, so A has new A3, A4 (2) and closing A2, A4 (2)."""
    zoned = settings.model_copy(update={"absconder_report_timezone": "Africa/Johannesburg"})
    headers = as_("supervisor", [month["a"]])  # a token works on any app with the same key
    with TestClient(create_app(zoned)) as client:
        body = client.get(PATH, params=NOVEMBER, headers=headers).json()
    assert body["timezone"] == "Africa/Johannesburg"
    assert body["period_start"] == "2026-10-31T22:00:00Z"
    column = body["regions"][0]
    assert (column["opening_balance"], column["new"], column["traced"]) == (3, 2, 3)
    assert column["closing_balance"] == 2


def test_an_unknown_time_zone_setting_is_refused(settings):
    with pytest.raises(ValueError, match="unknown time zone"):
        settings.model_validate({**settings.model_dump(), "absconder_report_timezone": "Mars/Base"})


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        ("application/pdf", "pdf"),
        ("text/csv", "csv"),
        ("application/json, application/pdf", "json"),
        ("*/*", "json"),
        ("", "json"),
    ],
)
def test_the_accept_header_picks_the_format(accept, chosen):
    request = Request({"type": "http", "headers": [(b"accept", accept.encode())]})
    assert template_format(request, None) == chosen
    assert template_format(request, "csv") == "csv"


def _ink(image: Image.Image, box: tuple[float, float, float, float]) -> tuple[int, int]:
    """(non-white pixels, coloured pixels) inside ``box`` (figure fraction, from the bottom)."""
    width, height = image.size
    left, bottom, w, h = box
    crop = image.convert("RGB").crop(
        (int(left * width), int((1 - bottom - h) * height),
         int((left + w) * width), int((1 - bottom) * height))
    )  # fmt: skip
    raw = crop.tobytes()
    pixels = [tuple(raw[i : i + 3]) for i in range(0, len(raw), 3)]
    non_white = sum(1 for p in pixels if min(p) < 235)
    coloured = sum(1 for p in pixels if max(p) - min(p) > 60)
    return non_white, coloured


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils: scripts/setup.sh")
def test_the_pdf_has_a_page_per_region_and_a_national_page_with_a_chart(
    api, month, as_, tmp_path: Path
):
    a, b = month["a"], month["b"]
    response = api.get(
        PATH, params={**NOVEMBER, "format": "pdf"}, headers=as_("supervisor", [a, b])
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    pdf = tmp_path / "template.pdf"
    pdf.write_bytes(response.content)
    subprocess.run(["pdftoppm", "-png", "-r", "50", str(pdf), str(tmp_path / "page")], check=True)
    images = sorted(tmp_path.glob("page-*.png"))
    assert len(images) == 3  # A, B, national
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for number, image_path in enumerate(images, start=1):
        shutil.copy(image_path, ARTIFACTS / f"absconder-template-page-{number}.png")
        with Image.open(image_path) as image:
            assert abs(image.size[0] - 585) <= 1 and abs(image.size[1] - 414) <= 1, image.size
            ink, colour = _ink(image, CHART_BOX)
            assert ink > 1000, f"page {number}: hardly anything drawn in the chart ({ink})"
            assert colour > 50, f"page {number}: no coloured bars or line ({colour})"
            # the table: drawn on the left half
            table_ink, _ = _ink(image, (0.02, 0.3, 0.5, 0.5))
            assert table_ink > 1500, f"page {number}: no table ({table_ink})"
    # page B has one new bar and no traced one: its chart holds less colour than A's
    with Image.open(images[0]) as first, Image.open(images[1]) as second:
        pages = {a: first, b: second} if a < b else {b: first, a: second}
        assert _ink(pages[a], CHART_BOX)[1] > _ink(pages[b], CHART_BOX)[1] > 0


def test_any_region_name_draws(recwarn):
    """A name is text, never a formula ($...$) nor a missing glyph (control characters)."""
    period = Period.month("2026-11", "UTC", datetime(2027, 1, 1, tzinfo=UTC))
    names = ["$\\frac{a}{", "\x00\x1f\x7f", "x" * 300, "_^{}\\"]
    regions = [RegionName(f"r{i}", name) for i, name in enumerate(names)]
    document = render_pdf(template([], period, regions, {}, 0))
    assert document.startswith(b"%PDF")
    assert not [w for w in recwarn if "Glyph" in str(w.message)]
