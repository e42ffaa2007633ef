"""Attack: probing case references of other regions through subject creation.

A supervisor of one region wants to know whether a person is monitored elsewhere (a former
partner, a witness, a colleague's case). Case references were unique across the platform, so
creating a subject with someone else's case reference answered 409 "already used" when it
existed anywhere - in a region the prober cannot see - and 201 when it did not: an oracle.

Case references are issued by each region's office, so they are now unique per region
(migration 0010): a reference that exists only in another region is simply accepted, exactly
like one that exists nowhere - the same status, the same body shape, about the same time. Only
a reference of the prober's own region clashes (409), and that subject is one they can see
anyway. Against the real API and database, with raw HTTP.
"""

from __future__ import annotations

import statistics
import time

import psycopg
import pytest

from tests.support import fresh_id

pytestmark = pytest.mark.integration

TRIALS = 15


@pytest.fixture(scope="module")
def regions(api, login) -> dict:
    root = login("admin", ["*"])
    mine, theirs = fresh_id("probe-mine"), fresh_id("probe-theirs")
    for region in (mine, theirs):
        created = api.post("/api/v1/regions", json={"id": region, "name": region}, headers=root)
        assert created.status_code == 201, created.text
    return {"root": root, "mine": mine, "theirs": theirs, "prober": login("supervisor", [mine])}


def _create(api, headers, region: str, case_ref: str):
    started = time.perf_counter()
    answer = api.post(
        "/api/v1/subjects",
        json={"name": fresh_id("probe"), "region_id": region, "case_ref": case_ref},
        headers=headers,
    )
    return answer, time.perf_counter() - started


def _shape(answer) -> tuple[int, tuple[str, ...]]:
    return answer.status_code, tuple(sorted(answer.json()))


def test_a_case_ref_elsewhere_answers_like_one_that_exists_nowhere(api, regions, settings):
    root, prober, mine = regions["root"], regions["prober"], regions["mine"]
    elsewhere_refs = []
    for _ in range(TRIALS):
        ref = fresh_id("CR-2024")
        created, _seconds = _create(api, root, regions["theirs"], ref)
        assert created.status_code == 201
        elsewhere_refs.append(ref)
    answers: dict[str, list] = {"elsewhere": [], "nowhere": []}
    times: dict[str, list[float]] = {"elsewhere": [], "nowhere": []}
    for ref in elsewhere_refs:  # interleaved, so that machine load hits both alike
        for case, value in (("elsewhere", ref), ("nowhere", fresh_id("CR-2024"))):
            answer, seconds = _create(api, prober, mine, value)
            answers[case].append(answer)
            times[case].append(seconds)
    shapes = {case: {_shape(a) for a in found} for case, found in answers.items()}
    medians = {case: statistics.median(found) for case, found in times.items()}
    # and a reference of the prober's own region: the one clash they are told about
    own, _seconds = _create(api, prober, mine, elsewhere_refs[0])
    print(
        f"\ncase_ref probe: exists elsewhere -> {shapes['elsewhere']}, median"
        f" {medians['elsewhere'] * 1000:.1f} ms; exists nowhere -> {shapes['nowhere']}, median"
        f" {medians['nowhere'] * 1000:.1f} ms; exists in my region -> {own.status_code}"
    )
    assert shapes["elsewhere"] == shapes["nowhere"] == {_shape(answers["nowhere"][0])}
    assert answers["nowhere"][0].status_code == 201
    for a, b in zip(answers["elsewhere"], answers["nowhere"], strict=True):
        assert a.json()["region_id"] == b.json()["region_id"] == mine
    slower, faster = max(medians.values()), min(medians.values())
    assert slower - faster < max(0.015, 0.5 * faster), medians
    assert own.status_code == 409
    assert mine in own.json()["detail"] and regions["theirs"] not in own.json()["detail"]
    listed = api.get("/api/v1/subjects", params={"limit": 1000}, headers=prober).json()
    assert elsewhere_refs[0] in {s["case_ref"] for s in listed}  # the clash was visible anyway


def test_case_refs_are_unique_per_region_in_the_schema(settings):
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'subjects'::regclass AND contype = 'u'"
        ).fetchall()
    constraints = dict(rows)
    assert constraints == {"subjects_region_case_ref_key": "UNIQUE (region_id, case_ref)"}
