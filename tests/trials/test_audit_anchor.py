"""The audit chain's head anchored outside the database: a superuser who rewrites history and
recomputes every later seal passes the chain check but not ``verify_audit --anchors``."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from analytics import services as analytics_services
from tests.factories import consented
from trials import anchors
from trials.anchors import anchor_periodic, anchor_write, anchors_verify, chain_head
from trials.audit import audit_context, audit_verify
from trials.models import AuditSeal, Participant
from trials.tasks import audit_anchor_task

KEY = "a-test-key-of-at-least-thirty-two-characters"


@pytest.fixture
def anchor_dir(settings, tmp_path):
    directory = tmp_path / "anchors"
    directory.mkdir()
    settings.TOLERANCE_AUDIT_ANCHOR_DIR = directory
    settings.TOLERANCE_AUDIT_ANCHOR_KEY = KEY
    return directory


@pytest.fixture
def participant(study, sites, coordinator_site_a):
    return consented(study, sites[0], coordinator_site_a)


def _verify_with_anchors(directory) -> str:
    """Run ``verify_audit --anchors``; return what it printed on stderr (CommandError if it failed)."""
    stderr = StringIO()
    try:
        call_command("verify_audit", "--anchors", str(directory), stdout=StringIO(), stderr=stderr)
    except CommandError:
        raise CommandError(stderr.getvalue()) from None
    return stderr.getvalue()


def _rewrite_and_reseal(event, *, birth_year: int) -> None:
    """What a database superuser can do: change an audit event with the triggers off, then recompute
    every later seal with the chain's public formula, sha256(prev | table | id | row as JSON)."""
    table = event._meta.db_table
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("SET LOCAL timezone = 'UTC'")
        cursor.execute(f"UPDATE {table} SET birth_year = %s WHERE pgh_id = %s", [birth_year, event.pgh_id])  # noqa: S608
        first = AuditSeal.objects.get(event_table=table, event_id=event.pgh_id)
        previous = first.prev_hash
        for seal in AuditSeal.objects.filter(seq__gte=first.seq).order_by("seq"):
            cursor.execute(
                f"SELECT row_to_json(t)::text FROM {seal.event_table} t WHERE pgh_id = %s",  # noqa: S608
                [seal.event_id],
            )
            payload = cursor.fetchone()[0]
            digest = hashlib.sha256(f"{previous}|{seal.event_table}|{seal.event_id}|{payload}".encode()).hexdigest()
            cursor.execute(
                "UPDATE trials_auditseal SET prev_hash = %s, hash = %s WHERE id = %s", [previous, digest, seal.pk]
            )
            previous = digest


def test_a_superuser_rewrite_with_recomputed_seals_is_detected_by_the_anchors(participant, anchor_dir):
    anchor_write(reason="periodic")
    genuine = Participant.pgh_event_model.objects.get(pgh_obj_id=participant.pk)
    _rewrite_and_reseal(genuine, birth_year=1950)
    assert Participant.pgh_event_model.objects.get(pk=genuine.pk).birth_year == 1950
    # The chain alone cannot tell: every seal matches its event again.
    assert audit_verify()[1] == []
    with pytest.raises(CommandError, match="no longer has the hash anchored at .*history up to it was rewritten"):
        _verify_with_anchors(anchor_dir)


def test_history_cut_back_behind_an_anchor_is_detected(participant, anchor_dir):
    """Removing the newest events with their seals leaves a chain that verifies; the anchor knew it
    was longer."""
    anchor_write(reason="periodic")
    last = AuditSeal.objects.order_by("-seq").first()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(f"DELETE FROM {last.event_table} WHERE pgh_id = %s", [last.event_id])  # noqa: S608
        cursor.execute("DELETE FROM trials_auditseal WHERE id = %s", [last.pk])
    assert audit_verify()[1] == []
    with pytest.raises(CommandError, match=f"link #{last.seq}, anchored at .* is no longer in the chain"):
        _verify_with_anchors(anchor_dir)


def test_an_intact_chain_matches_every_anchor_and_later_changes_do_not_disturb_them(
    participant, anchor_dir, coordinator_site_a
):
    anchor_write(reason="periodic")
    with audit_context(actor=coordinator_site_a, reason="year of birth corrected"):
        Participant.objects.filter(pk=participant.pk).update(birth_year=1984)
    anchor_write(reason="periodic")
    assert anchors_verify(directory=anchor_dir) == (2, [])
    stdout = StringIO()
    call_command("verify_audit", "--anchors", str(anchor_dir), stdout=stdout)
    assert "2 anchors verified" in stdout.getvalue()


def test_an_anchor_is_signed_read_only_and_never_overwritten(participant, anchor_dir, monkeypatch):
    monkeypatch.setattr(anchors.secrets, "token_hex", lambda n: "cafe")
    with time_machine.travel(dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC), tick=False):
        path = anchor_write(reason="periodic")
        original = path.read_bytes()
        # The same instant, the same head and the same suffix: the same name. O_EXCL refuses it.
        with pytest.raises(FileExistsError):
            anchor_write(reason="an attempt to overwrite")
    assert path.read_bytes() == original
    assert stat.S_IMODE(path.stat().st_mode) & 0o222 == 0
    document = json.loads(original)
    head = chain_head()
    assert document["chain"] == {"seq": head.seq, "hash": head.hash}
    assert head.seq == AuditSeal.objects.count() > 0
    assert (document["written_at"], document["reason"], document["algorithm"]) == (
        "2025-06-01T12:00:00Z",
        "periodic",
        "HMAC-SHA256",
    )
    body = {name: value for name, value in document.items() if name != "mac"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert hmac.compare_digest(document["mac"], hmac.new(KEY.encode(), canonical, hashlib.sha256).hexdigest())


def test_an_altered_or_forged_anchor_is_reported(participant, anchor_dir):
    genuine = anchor_write(reason="periodic")
    document = json.loads(genuine.read_text())
    altered = {**document, "chain": {"seq": document["chain"]["seq"], "hash": "0" * 64}}
    (anchor_dir / "anchor-20990101T000000000000Z-altered.json").write_text(json.dumps(altered))
    matched, problems = anchors_verify(directory=anchor_dir)
    assert matched == 1
    assert problems == [
        "anchor anchor-20990101T000000000000Z-altered.json: signature does not match "
        f"(altered or forged, or signed with another key: this key's id is {document['key_id']}, "
        f"the anchor names {document['key_id']})"
    ]
    # Signed with another key: refused as well.
    assert anchors_verify(directory=anchor_dir, key="another-key-of-at-least-thirty-two-chars")[0] == 0


def test_verify_with_anchors_refuses_an_empty_directory_and_a_missing_key(participant, anchor_dir, settings):
    with pytest.raises(CommandError, match="no audit anchors found"):
        _verify_with_anchors(anchor_dir)
    settings.TOLERANCE_AUDIT_ANCHOR_KEY = ""
    with pytest.raises(CommandError, match="No anchor key"):
        call_command("verify_audit", "--anchors", str(anchor_dir), stdout=StringIO())


def test_a_data_cut_is_anchored_once_it_commits(study, statistician, anchor_dir, django_capture_on_commit_callbacks):
    analytics_services.remission_definition_set(
        actor=statistician,
        study=study,
        name="NEDA-3",
        rule="neda3",
        parameters={},
        sap={"non_responders": "censor"},
        reason="SAP v1",
    )
    with django_capture_on_commit_callbacks() as callbacks:
        cut = analytics_services.datacut_create(actor=statistician, study=study, cut_date=dt.date(2025, 6, 30))
    assert list(anchor_dir.iterdir()) == []  # nothing before the commit
    for callback in callbacks:
        callback()
    [path] = anchor_dir.iterdir()
    document = json.loads(path.read_text())
    assert document["reason"] == f"data cut #{cut.pk} as of 2025-06-30"
    assert document["study"] == study.code
    # The head after the cut: it covers the cut's own audit event.
    assert document["chain"]["seq"] == chain_head().seq > cut.manifest["audit_chain"]["seq"]
    assert anchors_verify(directory=anchor_dir) == (1, [])


def test_the_periodic_anchor_writes_only_when_the_chain_moved(participant, anchor_dir, coordinator_site_a):
    first = audit_anchor_task()["anchor"]
    assert first is not None
    assert audit_anchor_task() == {"anchor": None}  # nothing new to anchor
    with audit_context(actor=coordinator_site_a, reason="year of birth corrected"):
        Participant.objects.filter(pk=participant.pk).update(birth_year=1983)
    second = anchor_periodic()
    assert second is not None
    assert second.name != first
    assert len(list(anchor_dir.iterdir())) == 2


def test_beat_runs_the_anchor_task(settings):
    from config.celery_app import app

    entry = settings.CELERY_BEAT_SCHEDULE["trials-audit-anchor"]
    assert entry["task"] == "trials.audit_anchor" == audit_anchor_task.name
    assert entry["task"] in app.tasks
    assert entry["schedule"] == dt.timedelta(minutes=60)


def test_without_configuration_nothing_is_anchored_and_check_deploy_warns(participant, settings):
    from trials.checks import audit_anchoring_check

    settings.TOLERANCE_AUDIT_ANCHOR_DIR = None
    settings.TOLERANCE_AUDIT_ANCHOR_KEY = ""
    assert anchor_periodic() is None
    assert [w.id for w in audit_anchoring_check()] == ["trials.W004"]


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"TOLERANCE_AUDIT_ANCHOR_DIR": "/srv/anchors"},
            "Set both TOLERANCE_AUDIT_ANCHOR_DIR and TOLERANCE_AUDIT_ANCHOR_KEY",
        ),
        (
            {"TOLERANCE_AUDIT_ANCHOR_DIR": "/srv/anchors", "TOLERANCE_AUDIT_ANCHOR_KEY": "short"},
            "at least 32 characters",
        ),
    ],
)
def test_an_incomplete_or_weak_anchor_configuration_stops_start_up(variables, message):
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TOLERANCE_AUDIT_ANCHOR")}
    result = subprocess.run(  # noqa: S603 (our own interpreter)
        [sys.executable, "-c", "import django; django.setup()"],
        env={**environment, **variables, "DJANGO_SETTINGS_MODULE": "config.settings.base"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stderr
