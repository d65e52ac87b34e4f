"""Every form of the app, posted empty and with hostile values, as every role that can open it.

Each page of the access matrix that a role can open is searched for POST forms. Each form is then
submitted four ways: empty, with wrong types (text in numbers and dates, impossible dates, choices
that do not exist), with 1 MB strings, and with control and bidirectional-override characters. The
answer must be a page with field errors or a 4xx, never a 500 or an exception, and nothing may be
saved: the number of audit events in the whole database is the same before and after (every
clinical write, in any app, leaves an event).
"""

from __future__ import annotations

from html.parser import HTMLParser

import pghistory.models
import pytest
from django.apps import apps
from django.db import connection

from tests.test_access_matrix import POLICY, _url, world  # noqa: F401  (``world`` is a fixture)

FORM_ROLES = ["coordinator", "investigator", "monitor", "medical_monitor", "data_manager", "statistician"]
MEGABYTE = "x" * (1024 * 1024)
HOSTILE_TEXT = "a\x00b\x07c\u202ed\u2066e"
# A value a field of each kind can never accept, so the form must refuse it.
WRONG_BY_TYPE = {
    "number": "abc",
    "date": "2026-02-30",
    "datetime-local": "2026-13-01T25:61",
    "time": "25:61",
    "email": "not an e-mail",
    "checkbox": "maybe",
    "radio": "no-such-choice",
    "select": "no-such-choice",
}


class _Forms(HTMLParser):
    """The POST forms of a page: their action and the name and kind of each field."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self._current: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and (attrs.get("method") or "get").lower() == "post":
            self._current = {"action": attrs.get("action") or "", "fields": {}}
            self.forms.append(self._current)
        elif self._current is not None and tag in ("input", "select", "textarea") and attrs.get("name"):
            kind = tag if tag != "input" else (attrs.get("type") or "text").lower()
            if kind in ("submit", "button", "reset", "image", "file"):
                return
            self._current["fields"].setdefault(attrs["name"], (kind, attrs.get("value") or ""))

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None


def _event_total() -> int:
    tables = [m._meta.db_table for m in apps.get_models() if issubclass(m, pghistory.models.Event)]
    assert len(tables) > 20, "the audit event tables were not found"
    sql = " + ".join(f'(SELECT count(*) FROM "{table}")' for table in tables)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql}")  # noqa: S608 - table names come from the models
        return cursor.fetchone()[0]


def _variants(fields: dict) -> dict[str, dict]:
    keep = {name: value for name, (kind, value) in fields.items() if kind == "hidden"}
    wrong = {name: WRONG_BY_TYPE.get(kind, "") for name, (kind, _value) in fields.items() if kind != "hidden"}
    texts = [name for name, (kind, _value) in fields.items() if kind in ("text", "textarea", "search", "password")]
    return {
        "empty": {**keep},
        "wrong types": {**wrong, **keep},
        "1 MB strings": {**wrong, **dict.fromkeys(texts, MEGABYTE), **keep},
        "control characters": {**wrong, **dict.fromkeys(texts, HOSTILE_TEXT), **keep},
    }


@pytest.mark.parametrize("role", FORM_ROLES)
def test_no_form_saves_or_crashes_on_empty_or_hostile_input(world, role, client):  # noqa: F811
    client.force_login(world["users"][role])
    client.raise_request_exception = False
    problems: list[str] = []
    forms_posted = 0
    for name, policy in sorted(POLICY.items()):
        if policy.api or name in ("trials:study_audit_export",):
            continue
        page = _url(name, policy, world, other_site=False)
        response = client.get(page)
        if response.status_code != 200 or "text/html" not in response.get("Content-Type", ""):
            continue
        parser = _Forms()
        parser.feed(response.content.decode())
        for form in parser.forms:
            action = form["action"] or page
            if action.startswith(("/logout", "/login")):
                continue
            for variant, data in _variants(form["fields"]).items():
                before = _event_total()
                answer = client.post(action, data)
                forms_posted += 1
                saved = _event_total() - before
                if answer.status_code >= 500:
                    problems.append(f"{role} {variant} -> {action} ({name}): {answer.status_code}")
                elif saved:
                    problems.append(f"{role} {variant} -> {action} ({name}): saved {saved} audit events")
                elif answer.status_code not in (200, 400, 403, 404, 409, 422):
                    problems.append(f"{role} {variant} -> {action} ({name}): answered {answer.status_code}")
    assert problems == []
    if role in ("coordinator", "investigator", "data_manager", "statistician"):
        assert forms_posted >= 8, f"{role} found only {forms_posted / 4:.0f} forms: the crawl is broken"
