"""A signature is bound to the clinical content (docs/reliability.md #15): locking, unlocking and other
administrative marks leave it valid; a change of clinical data, in the signed record or in the
casebook under it, invalidates it."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.factories import infused, member
from trials import services
from trials.models import Participant, Role, Signature, Visit
from trials.signatures import content_digest

PASSWORD = "correct-horse-battery"


@pytest.fixture
def investigator(study, sites):
    return member("pi_a", study, Role.INVESTIGATOR, sites[0])


@pytest.fixture
def participant(study, sites, coordinator_site_a):
    return infused(study, sites[0], coordinator_site_a)


def _sign(investigator, participant):
    return services.record_sign(actor=investigator, record=participant, password=PASSWORD, meaning="casebook")


def test_locking_a_signed_casebook_keeps_the_signature(participant, investigator, data_manager):
    _sign(investigator, participant)

    services.casebook_set_locked(actor=data_manager, participant=participant, locked=True, reason="SDV complete")
    assert services.signature_state(Participant.objects.get(pk=participant.pk))["valid"] is True

    services.casebook_set_locked(actor=data_manager, participant=participant, locked=False, reason="query on AE")
    state = services.signature_state(Participant.objects.get(pk=participant.pk))
    assert state["valid"] is True
    assert state["invalidated_on"] is None


def test_a_study_lock_keeps_the_signature(study, participant, investigator, data_manager):
    _sign(investigator, participant)

    services.study_set_locked(actor=data_manager, study=study, locked=True, reason="interim cut")

    assert services.signature_state(Participant.objects.get(pk=participant.pk))["valid"] is True


def test_a_change_of_clinical_data_under_the_casebook_invalidates_it(participant, investigator, coordinator_site_a):
    _sign(investigator, participant)
    visit = participant.visits.get(definition__code="d7")

    services.visit_record(actor=coordinator_site_a, visit=visit, actual_date=dt.date(2025, 2, 10))

    state = services.signature_state(Participant.objects.get(pk=participant.pk))
    assert state["valid"] is False
    assert state["invalidated_on"] == Visit.objects.get(pk=visit.pk).updated_at


def test_the_digest_ignores_bookkeeping_and_follows_clinical_fields(participant, data_manager):
    before = content_digest(participant)

    services.casebook_set_locked(actor=data_manager, participant=participant, locked=True, reason="SDV complete")
    assert content_digest(participant) == before

    services.casebook_set_locked(actor=data_manager, participant=participant, locked=False, reason="correction")
    services.record_void(actor=data_manager, record=participant.visits.get(definition__code="m24"), reason="dup")
    assert content_digest(participant) != before


def test_the_signature_stores_the_digest_it_signed(participant, investigator):
    signature = _sign(investigator, participant)

    assert signature.content_digest == content_digest(participant)
    assert len(signature.content_digest) == 64


def test_a_signature_without_a_digest_still_compares_the_version(participant, investigator, data_manager):
    signature = _sign(investigator, participant)
    Signature.objects.filter(pk=signature.pk).update(content_digest="")  # signed before digests were kept

    assert services.signature_state(Participant.objects.get(pk=participant.pk))["valid"] is True


def test_sign_then_lock_shows_no_invalidation_on_the_page(client, participant, investigator, data_manager):
    client.force_login(investigator)
    assert (
        client.post(f"/participants/{participant.pk}/sign/", {"meaning": "casebook", "password": PASSWORD}).status_code
        == 302
    )
    client.force_login(data_manager)
    assert client.post(f"/participants/{participant.pk}/lock/", {"reason": "monitoring complete"}).status_code == 302

    page = client.get(f"/participants/{participant.pk}/").content.decode()

    assert "Signed by <strong>pi_a</strong>" in page
    assert "Signature invalidated" not in page
    assert "this casebook is locked" in page
