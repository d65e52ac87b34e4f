"""Integrity through the pages: locks, signatures, voiding, audit trail and export, blinding."""

import csv
import datetime as dt
import io

import pytest
from rest_framework.test import APIClient

from tests.factories import admin_change, build_study, enrolled, infused, member
from trials import services
from trials.models import AccessEvent, EmergencyUnblinding, Participant, RandomizationSlot, Role, Signature, Visit

PASSWORD = "correct-horse-battery"
CANARY = "ARM-ZX81Q"


@pytest.fixture
def participant(study, sites, coordinator_site_a):
    return infused(study, sites[0], coordinator_site_a)


@pytest.fixture
def investigator(study, sites):
    return member("pi_a", study, Role.INVESTIGATOR, sites[0])


def test_a_data_manager_locks_a_casebook_from_its_page_only_with_a_reason(client, participant, data_manager):
    client.force_login(data_manager)
    url = f"/participants/{participant.pk}/lock/"
    response = client.post(url, {"reason": ""})
    assert response.status_code == 200
    assert b"A reason is required." in response.content
    assert not Participant.objects.get(pk=participant.pk).is_locked
    response = client.post(url, {"reason": "monitoring visit complete"})
    assert response.status_code == 302
    assert Participant.objects.get(pk=participant.pk).is_locked
    page = client.get(f"/participants/{participant.pk}/")
    assert b"this casebook is locked" in page.content


def test_an_investigator_signs_the_casebook_and_a_change_invalidates_it_visibly(
    client, participant, investigator, coordinator_site_a
):
    client.force_login(investigator)
    url = f"/participants/{participant.pk}/sign/"
    response = client.post(url, {"meaning": "casebook", "password": "wrong"})
    assert b"The password is not correct" in response.content
    assert not Signature.objects.exists()
    assert AccessEvent.objects.filter(kind="signature_failed", user=investigator).count() == 1

    assert client.post(url, {"meaning": "casebook", "password": PASSWORD}).status_code == 302
    page = client.get(f"/participants/{participant.pk}/").content.decode()
    assert "Signed by <strong>pi_a</strong>" in page
    assert "I confirm this casebook is complete and accurate" in page

    services.disposition_record(
        actor=coordinator_site_a,
        participant=participant,
        kind="withdrawn",
        disposition_date=dt.date(2025, 3, 1),
        reason="moved",
    )
    page = client.get(f"/participants/{participant.pk}/").content.decode()
    assert "Signature invalidated" in page


def test_a_coordinator_cannot_sign_or_lock(client, participant, coordinator_site_a):
    client.force_login(coordinator_site_a)
    assert (
        client.post(f"/participants/{participant.pk}/sign/", {"meaning": "casebook", "password": PASSWORD}).status_code
        == 403
    )
    assert client.post(f"/participants/{participant.pk}/lock/", {"reason": "x"}).status_code == 403
    assert not Signature.objects.exists()
    assert not Participant.objects.get(pk=participant.pk).is_locked


def test_voiding_a_visit_keeps_it_and_shows_it_voided(client, participant, coordinator_site_a):
    visit = participant.visits.get(definition__code="d7")
    services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=dt.date(2025, 2, 10))
    client.force_login(coordinator_site_a)
    assert client.post(f"/visits/{visit.pk}/void/", {"reason": ""}).status_code == 200
    assert Visit.objects.get(pk=visit.pk).voided_at is None
    assert client.post(f"/visits/{visit.pk}/void/", {"reason": "entered on the wrong participant"}).status_code == 302
    assert Visit.objects.get(pk=visit.pk).void_reason == "entered on the wrong participant"


def test_the_history_page_shows_old_new_who_and_why(client, participant, coordinator_site_a):
    visit = participant.visits.get(definition__code="d7")
    services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=dt.date(2025, 2, 10))
    visit.refresh_from_db()
    services.visit_record(
        actor=coordinator_site_a,
        visit=visit,
        actual_date=dt.date(2025, 2, 11),
        reason="transcription error",
        expected_version=visit.version,
    )
    client.force_login(coordinator_site_a)
    page = client.get(f"/participants/{participant.pk}/history/").content.decode()
    assert "transcription error" in page
    assert "2025-02-10" in page
    assert "2025-02-11" in page
    assert "coord_a" in page


def test_the_audit_export_is_for_data_managers(client, study, participant, data_manager, coordinator_site_a):
    client.force_login(coordinator_site_a)
    assert client.get(f"/studies/{study.code}/audit.csv").status_code == 403
    client.force_login(data_manager)
    response = client.get(f"/studies/{study.code}/audit.csv")
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    header, *lines = csv.reader(io.StringIO(body))
    assert header[:5] == ["at", "model", "object_id", "subject", "action"]
    assert header[-2:] == ["old", "new"]
    assert any(line[1] == "trials.infusion" and '"LOT-0001"' in line[-1] for line in lines)


@pytest.fixture
def blinded(sites):
    study = build_study(code="TREG-BLIND", sites=list(sites))
    with admin_change("randomized, blinded design"):
        study.is_blinded = True
        study.save()
    for cohort in study.cohorts.all():
        for sequence in range(1, 4):
            RandomizationSlot.objects.create(study=study, cohort=cohort, sequence=sequence, arm=CANARY)
    coordinator = member("coord_blind", study, Role.COORDINATOR, sites[0])
    participant = enrolled(study, sites[0], coordinator)
    users = {
        "coordinator": coordinator,
        "investigator": member("pi_blind", study, Role.INVESTIGATOR, sites[0]),
        "monitor": member("cra_blind", study, Role.MONITOR, sites[0]),
        "medical_monitor": member("mm_blind", study, Role.MEDICAL_MONITOR),
        "data_manager": member("dm_blind", study, Role.DATA_MANAGER),
        "statistician": member("stat_blind", study, Role.STATISTICIAN),
    }
    unblinded = member("stat_unblinded", study, Role.STATISTICIAN, unblinded=True)
    return study, participant, users, unblinded


def test_no_blinded_role_can_learn_the_arm_from_any_page_or_endpoint(client, blinded):
    study, participant, users, _ = blinded
    pages = [
        f"/studies/{study.code}/participants/",
        f"/participants/{participant.pk}/",
        f"/participants/{participant.pk}/history/",
        f"/studies/{study.code}/audit.csv",
        f"/participants/{participant.pk}/unblind/",
        f"/participants/{participant.pk}/enrol/",
    ]
    endpoints = [
        "/api/v1/participants/",
        f"/api/v1/participants/{participant.pk}/",
        f"/api/v1/participants/{participant.pk}/visits/",
        "/api/v1/studies/",
        "/api/v1/schema/",
    ]
    crawled = 0
    for role, user in users.items():
        client.force_login(user)
        api = APIClient()
        api.force_authenticate(user)
        for url in pages:
            response = client.get(url)
            body = b"".join(response.streaming_content) if response.streaming else response.content
            assert CANARY.encode() not in body, (role, url)
            crawled += 1
        for url in endpoints:
            assert CANARY.encode() not in api.get(url).content, (role, url)
            crawled += 1
    assert crawled == len(users) * (len(pages) + len(endpoints))


def test_an_unblinded_member_sees_the_arm_on_the_casebook(client, blinded):
    _, participant, _, unblinded = blinded
    client.force_login(unblinded)
    assert CANARY.encode() in client.get(f"/participants/{participant.pk}/").content


def test_emergency_unblinding_from_the_page_shows_the_arm_once_and_records_it(client, blinded):
    _, participant, users, _ = blinded
    client.force_login(users["investigator"])
    refused = client.post(f"/participants/{participant.pk}/unblind/", {"reason": "", "password": PASSWORD})
    assert CANARY.encode() not in refused.content
    assert not EmergencyUnblinding.objects.exists()
    response = client.post(
        f"/participants/{participant.pk}/unblind/", {"reason": "severe reaction", "password": PASSWORD}
    )
    assert response.status_code == 200
    assert CANARY.encode() in response.content
    assert response["Cache-Control"] == "no-store"
    assert EmergencyUnblinding.objects.get().reason == "severe reaction"
    assert CANARY.encode() not in client.get(f"/participants/{participant.pk}/").content
