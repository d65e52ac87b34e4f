"""Screening, consent and eligibility: the services that run before a participant can be enrolled."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, connection, transaction

from tests.factories import SiteFactory, admin_change, build_study, consented, enrolled, member, screened
from tests.trials.conftest import CLINICAL_TODAY
from trials import services
from trials.errors import LockedError, RuleViolation
from trials.models import (
    ConsentDocument,
    EligibilityAnswer,
    EligibilityCriterion,
    Participant,
    ParticipantStatus,
    Role,
    Study,
)


def _screen(study, site, actor, **overrides):
    kwargs = {"sex": "F", "birth_year": 1985, "screening_date": dt.date(2025, 1, 6)}
    kwargs.update(overrides)
    return services.participant_screen(actor=actor, study=study, site=site, **kwargs)


def _answers(study, *, inclusion=True, exclusion=False):
    return {c.pk: (inclusion if c.kind == c.Kind.INCLUSION else exclusion) for c in study.criteria.all()}


# ---------------------------------------------------------------------------------------------
# Screening
# ---------------------------------------------------------------------------------------------


def test_it_gives_each_site_its_own_subject_code_sequence(study, sites, coordinator_site_a, coordinator_site_b):
    first_a = _screen(study, sites[0], coordinator_site_a)
    second_a = _screen(study, sites[0], coordinator_site_a)
    first_b = _screen(study, sites[1], coordinator_site_b)
    third_a = _screen(study, sites[0], coordinator_site_a)

    assert [p.subject_code for p in (first_a, second_a, first_b, third_a)] == [
        "S01-0001",
        "S01-0002",
        "S02-0001",
        "S01-0003",
    ]
    assert (first_a.sequence, first_b.sequence, third_a.sequence) == (1, 1, 3)
    first_a.refresh_from_db()
    assert first_a.status == ParticipantStatus.SCREENING
    assert first_a.birth_year == 1985


def test_it_numbers_the_same_site_independently_in_each_study(study, sites, coordinator_site_a):
    other = build_study(code="TREG-MS-02", sites=list(sites))
    member("coord_a", other, Role.COORDINATOR, sites[0])
    _screen(study, sites[0], coordinator_site_a)
    _screen(study, sites[0], coordinator_site_a)

    assert _screen(other, sites[0], coordinator_site_a).subject_code == "S01-0001"


def test_it_refuses_to_screen_at_a_site_where_the_actor_is_not_site_staff(
    study, sites, coordinator_site_a, monitor, row_counts
):
    before = row_counts()
    for actor, site in ((coordinator_site_a, sites[1]), (monitor, sites[0])):
        with pytest.raises(PermissionDenied, match="screen at site"):
            _screen(study, site, actor)
    assert row_counts() == before


def test_it_refuses_a_site_that_does_not_take_part_in_the_study(study, coordinator_site_a, row_counts):
    outside = SiteFactory(code="S09")
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _screen(study, outside, coordinator_site_a)

    assert exc.value.message_dict == {"site": ["Site S09 does not take part in treg-ms-01."]}
    assert row_counts() == before


def test_it_accepts_a_screening_date_of_clinical_today(study, sites, coordinator_site_a, frozen_now):
    participant = _screen(study, sites[0], coordinator_site_a, screening_date=CLINICAL_TODAY)

    assert participant.screening_date == CLINICAL_TODAY


def test_it_refuses_a_screening_date_in_the_future(study, sites, coordinator_site_a, frozen_now, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _screen(study, sites[0], coordinator_site_a, screening_date=CLINICAL_TODAY + dt.timedelta(days=1))

    assert list(exc.value.message_dict) == ["screening_date"]
    assert "2025-06-03 is in the future" in exc.value.message_dict["screening_date"][0]
    assert row_counts() == before


@pytest.mark.parametrize(
    ("birth_year", "message"),
    [
        (2026, "Year of birth 2026 is after the screening date."),
        (1923, "Year of birth 1923 gives an age of at least 101 at screening; the protocol allows at most 100."),
        (1900, "Year of birth 1900 gives an age of at least 124 at screening; the protocol allows at most 100."),
        (2008, "Year of birth 2008 gives an age of at most 17 at screening; the protocol needs 18 or older."),
        (2025, "Year of birth 2025 gives an age of at most 0 at screening; the protocol needs 18 or older."),
    ],
    ids=["born-after-screening", "over-100", "aged-125", "aged-17", "aged-0"],
)
def test_it_refuses_a_year_of_birth_outside_the_protocols_age_range(
    study, sites, coordinator_site_a, row_counts, birth_year, message
):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _screen(study, sites[0], coordinator_site_a, birth_year=birth_year, screening_date=dt.date(2025, 1, 6))

    assert exc.value.message_dict == {"birth_year": [message]}
    assert row_counts() == before


@pytest.mark.parametrize("birth_year", [1925, 2007], ids=["aged-99-or-100", "aged-17-or-18"])
def test_it_accepts_the_oldest_and_youngest_ages_the_protocol_allows(study, sites, coordinator_site_a, birth_year):
    participant = _screen(study, sites[0], coordinator_site_a, birth_year=birth_year)

    assert participant.birth_year == birth_year


def test_a_paediatric_protocol_screens_a_child(study, sites, coordinator_site_a):
    with admin_change("paediatric protocol: 8 to 16 years"):
        Study.objects.filter(pk=study.pk).update(min_age_years=8, max_age_years=16)

    participant = _screen(study, sites[0], coordinator_site_a, birth_year=2015)

    assert participant.birth_year == 2015
    with pytest.raises(RuleViolation, match="the protocol needs 8 or older"):
        _screen(study, sites[0], coordinator_site_a, birth_year=2020)


def test_it_refuses_a_screening_date_before_the_study_started(study, sites, coordinator_site_a, row_counts):
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _screen(study, sites[0], coordinator_site_a, birth_year=1900, screening_date=dt.date(1928, 3, 1))

    assert exc.value.message_dict == {
        "screening_date": [
            "The screening date 1928-03-01 is before the study started (its first consent form took effect on "
            "2024-01-01)."
        ]
    }
    assert row_counts() == before


def test_a_refused_screening_does_not_use_up_a_subject_code(study, sites, coordinator_site_a):
    with pytest.raises(RuleViolation):
        _screen(study, sites[0], coordinator_site_a, birth_year=1800)

    assert _screen(study, sites[0], coordinator_site_a).subject_code == "S01-0001"


def test_the_database_refuses_a_second_participant_with_the_same_subject_code(study, sites, coordinator_site_a):
    first = _screen(study, sites[0], coordinator_site_a)

    with pytest.raises(IntegrityError, match="participant_subject_code_unique"), transaction.atomic():
        Participant.objects.create(
            study=study,
            site=sites[0],
            subject_code=first.subject_code,
            sequence=99,
            sex="M",
            birth_year=1980,
            screening_date=dt.date(2025, 1, 6),
        )

    assert Participant.objects.filter(subject_code=first.subject_code).count() == 1


def test_the_database_refuses_a_second_participant_with_the_same_site_sequence(study, sites, coordinator_site_a):
    first = _screen(study, sites[0], coordinator_site_a)

    with pytest.raises(IntegrityError, match="participant_sequence_unique"), transaction.atomic():
        Participant.objects.create(
            study=study,
            site=sites[0],
            subject_code="S01-9999",
            sequence=first.sequence,
            sex="M",
            birth_year=1980,
            screening_date=dt.date(2025, 1, 6),
        )


def test_it_refuses_screening_in_a_locked_study(study, sites, coordinator_site_a, row_counts):
    with admin_change():
        Study.objects.filter(pk=study.pk).update(is_locked=True)
    before = row_counts()

    with pytest.raises(LockedError, match="is locked"):
        _screen(study, sites[0], coordinator_site_a)

    assert row_counts() == before


# ---------------------------------------------------------------------------------------------
# Consent
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def version_2(study):
    return ConsentDocument.objects.create(study=study, version="2.0", effective_date=dt.date(2025, 3, 1))


def test_it_records_consent_to_the_current_version(study, sites, coordinator_site_a):
    participant = screened(study, sites[0], coordinator_site_a)
    document = study.consent_documents.get(version="1.0")

    consent = services.consent_record(
        actor=coordinator_site_a, participant=participant, document=document, consent_date=dt.date(2025, 1, 6)
    )

    consent.refresh_from_db()
    assert (consent.participant_id, consent.document_id, consent.consent_date) == (
        participant.pk,
        document.pk,
        dt.date(2025, 1, 6),
    )


def test_it_refuses_a_consent_date_in_the_future(study, sites, coordinator_site_a, frozen_now, row_counts):
    participant = screened(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.consent_record(
            actor=coordinator_site_a,
            participant=participant,
            document=study.consent_documents.get(),
            consent_date=CLINICAL_TODAY + dt.timedelta(days=1),
        )

    assert exc.value.message_dict == {"consent_date": ["Consent date 2025-06-03 is in the future."]}
    assert row_counts() == before


def test_it_refuses_consent_dated_before_the_document_took_effect(
    study, sites, coordinator_site_a, version_2, row_counts
):
    participant = screened(study, sites[0], coordinator_site_a, screening_date=dt.date(2025, 2, 20))
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.consent_record(
            actor=coordinator_site_a, participant=participant, document=version_2, consent_date=dt.date(2025, 2, 28)
        )

    assert exc.value.message_dict == {
        "consent_date": [
            "Version 2.0 only took effect on 2025-03-01; consent dated 2025-02-28 cannot be to it.",
        ],
        "document": ["Version 1.0 was in force on 2025-02-28; consent must be to it, not to v2.0."],
    }
    assert row_counts() == before


def test_it_accepts_consent_on_the_day_the_document_takes_effect(study, sites, coordinator_site_a, version_2):
    participant = screened(study, sites[0], coordinator_site_a, screening_date=dt.date(2025, 2, 20))

    consent = services.consent_record(
        actor=coordinator_site_a, participant=participant, document=version_2, consent_date=dt.date(2025, 3, 1)
    )

    assert consent.document == version_2


def test_it_accepts_reconsent_to_a_newer_version(study, sites, coordinator_site_a, version_2):
    participant = enrolled(study, sites[0], coordinator_site_a)

    services.consent_record(
        actor=coordinator_site_a, participant=participant, document=version_2, consent_date=dt.date(2025, 3, 4)
    )

    assert list(participant.consents.order_by("consent_date").values_list("document__version", flat=True)) == [
        "1.0",
        "2.0",
    ]


def test_it_refuses_reconsent_to_the_same_version(study, sites, coordinator_site_a, row_counts):
    participant = consented(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.consent_record(
            actor=coordinator_site_a,
            participant=participant,
            document=study.consent_documents.get(version="1.0"),
            consent_date=dt.date(2025, 2, 1),
        )

    assert exc.value.message_dict == {"document": ["S01-0001 already consented to this version."]}
    assert row_counts() == before


def test_it_refuses_reconsent_to_an_older_version(study, sites, coordinator_site_a, version_2, row_counts):
    participant = screened(study, sites[0], coordinator_site_a, screening_date=dt.date(2025, 3, 2))
    services.consent_record(
        actor=coordinator_site_a, participant=participant, document=version_2, consent_date=dt.date(2025, 3, 2)
    )
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.consent_record(
            actor=coordinator_site_a,
            participant=participant,
            document=study.consent_documents.get(version="1.0"),
            consent_date=dt.date(2025, 3, 3),
        )

    assert exc.value.message_dict == {"document": ["Re-consent must be to a newer version than v2.0."]}
    assert row_counts() == before


def test_it_refuses_consent_to_a_version_superseded_on_the_consent_date(
    study, sites, coordinator_site_a, version_2, row_counts
):
    participant = screened(study, sites[0], coordinator_site_a, screening_date=dt.date(2025, 3, 10))
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.consent_record(
            actor=coordinator_site_a,
            participant=participant,
            document=study.consent_documents.get(version="1.0"),
            consent_date=dt.date(2025, 3, 10),
        )

    assert exc.value.message_dict == {
        "document": ["Version 2.0 was in force on 2025-03-10; consent must be to it, not to v1.0."]
    }
    assert row_counts() == before


def test_it_refuses_a_consent_document_of_another_study(study, sites, coordinator_site_a, row_counts):
    other = build_study(code="TREG-MS-02", sites=list(sites))
    participant = screened(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.consent_record(
            actor=coordinator_site_a,
            participant=participant,
            document=other.consent_documents.get(),
            consent_date=dt.date(2025, 1, 6),
        )

    assert exc.value.message_dict == {"document": ["This consent document belongs to another study."]}
    assert row_counts() == before


def test_it_refuses_consent_after_a_screen_failure(study, sites, coordinator_site_a, row_counts):
    participant = screened(study, sites[0], coordinator_site_a)
    services.participant_screen_fail(actor=coordinator_site_a, participant=participant, reason="Withdrew interest")
    before = row_counts()

    with pytest.raises(RuleViolation, match="failed screening; consent cannot be recorded"):
        services.consent_record(
            actor=coordinator_site_a,
            participant=participant,
            document=study.consent_documents.get(),
            consent_date=dt.date(2025, 1, 7),
        )

    assert row_counts() == before


def test_reconsent_is_due_once_a_newer_version_takes_effect(study, sites, coordinator_site_a, version_2, time_machine):
    participant = consented(study, sites[0], coordinator_site_a)

    time_machine.move_to(dt.datetime(2025, 2, 27, 9, 0, tzinfo=dt.UTC), tick=False)  # clinical today 2025-02-27
    assert services.reconsent_due(participant) is None

    time_machine.move_to(dt.datetime(2025, 2, 28, 10, 0, tzinfo=dt.UTC), tick=False)  # clinical today 2025-03-01
    assert services.reconsent_due(participant) == version_2

    services.consent_record(
        actor=coordinator_site_a, participant=participant, document=version_2, consent_date=dt.date(2025, 3, 1)
    )
    assert services.reconsent_due(participant) is None


def test_reconsent_is_not_due_for_someone_who_never_consented(study, sites, coordinator_site_a, version_2, frozen_now):
    participant = screened(study, sites[0], coordinator_site_a)

    assert services.reconsent_due(participant) is None


def test_reconsent_is_not_due_after_a_screen_failure(study, sites, coordinator_site_a, version_2, frozen_now):
    participant = consented(study, sites[0], coordinator_site_a)
    services.participant_screen_fail(actor=coordinator_site_a, participant=participant, reason="Lab values")
    participant.refresh_from_db()

    assert services.reconsent_due(participant) is None


@pytest.mark.parametrize("lock", ["study", "participant"])
def test_it_refuses_consent_when_locked(study, sites, coordinator_site_a, row_counts, lock):
    participant = screened(study, sites[0], coordinator_site_a)
    _lock(lock, participant)
    before = row_counts()

    with pytest.raises(LockedError, match="is locked; no data can be changed"):
        services.consent_record(
            actor=coordinator_site_a,
            participant=participant,
            document=study.consent_documents.get(),
            consent_date=dt.date(2025, 1, 6),
        )

    assert row_counts() == before


def _lock(lock: str, participant: Participant) -> None:
    if lock == "study":
        with admin_change():
            Study.objects.filter(pk=participant.study_id).update(is_locked=True)
    else:
        with admin_change():
            Participant.objects.filter(pk=participant.pk).update(is_locked=True)


# ---------------------------------------------------------------------------------------------
# Eligibility
# ---------------------------------------------------------------------------------------------


def test_it_records_eligibility_answers_item_by_item(study, sites, coordinator_site_a):
    participant = consented(study, sites[0], coordinator_site_a)
    inclusion = study.criteria.get(kind="inclusion", number=1)
    exclusion = study.criteria.get(kind="exclusion", number=1)

    services.eligibility_record(actor=coordinator_site_a, participant=participant, answers={inclusion.pk: True})
    assert services.eligibility_unmet(participant) == ["Exclusion 1 is not answered"]

    services.eligibility_record(actor=coordinator_site_a, participant=participant, answers={exclusion.pk: False})
    assert services.eligibility_unmet(participant) == []
    assert dict(participant.eligibility_answers.values_list("criterion_id", "answer")) == {
        inclusion.pk: True,
        exclusion.pk: False,
    }


def test_it_refuses_eligibility_before_consent(study, sites, coordinator_site_a, row_counts):
    participant = screened(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.eligibility_record(actor=coordinator_site_a, participant=participant, answers=_answers(study))

    assert exc.value.messages == ["S01-0001 has not consented: no eligibility assessment before consent."]
    assert row_counts() == before


def test_it_requires_a_reason_to_change_an_eligibility_answer(study, sites, coordinator_site_a, row_counts):
    participant = consented(study, sites[0], coordinator_site_a)
    services.eligibility_record(actor=coordinator_site_a, participant=participant, answers=_answers(study))
    exclusion = study.criteria.get(kind="exclusion")
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        services.eligibility_record(
            actor=coordinator_site_a, participant=participant, answers={exclusion.pk: True}, reason="  "
        )

    assert exc.value.message_dict == {"reason": ["A reason for change is required to change an eligibility answer."]}
    assert row_counts() == before
    answer = EligibilityAnswer.objects.get(participant=participant, criterion=exclusion)
    assert (answer.answer, answer.version) == (False, 1)


def test_it_changes_an_eligibility_answer_with_a_reason(study, sites, coordinator_site_a):
    participant = consented(study, sites[0], coordinator_site_a)
    services.eligibility_record(actor=coordinator_site_a, participant=participant, answers=_answers(study))
    exclusion = study.criteria.get(kind="exclusion")

    services.eligibility_record(
        actor=coordinator_site_a,
        participant=participant,
        answers={exclusion.pk: True},
        reason="Active infection found on the screening labs",
    )

    answer = EligibilityAnswer.objects.get(participant=participant, criterion=exclusion)
    assert (answer.answer, answer.version) == (True, 2)
    assert services.eligibility_unmet(participant) == ["Exclusion 1 is not met"]


def test_it_needs_no_reason_to_repeat_an_unchanged_answer(study, sites, coordinator_site_a):
    participant = consented(study, sites[0], coordinator_site_a)
    services.eligibility_record(actor=coordinator_site_a, participant=participant, answers=_answers(study))

    services.eligibility_record(actor=coordinator_site_a, participant=participant, answers=_answers(study))

    assert list(participant.eligibility_answers.values_list("version", flat=True)) == [1, 1]


def test_it_refuses_an_answer_to_a_criterion_of_another_study(study, sites, coordinator_site_a, row_counts):
    other = build_study(code="TREG-MS-02", sites=list(sites))
    participant = consented(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation, match="not part of this study"):
        services.eligibility_record(actor=coordinator_site_a, participant=participant, answers=_answers(other))

    assert row_counts() == before


def test_it_refuses_an_answer_to_an_inactive_criterion(study, sites, coordinator_site_a, row_counts):
    retired = EligibilityCriterion.objects.create(
        study=study, kind="inclusion", number=2, text="Retired criterion", is_active=False
    )
    participant = consented(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation, match="not part of this study"):
        services.eligibility_record(actor=coordinator_site_a, participant=participant, answers={retired.pk: True})

    assert row_counts() == before


def test_it_refuses_eligibility_answers_after_enrolment(study, sites, coordinator_site_a, row_counts):
    participant = enrolled(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation, match=r"only be recorded during screening \(S01-0001 is enrolled\)"):
        services.eligibility_record(
            actor=coordinator_site_a,
            participant=participant,
            answers=_answers(study, exclusion=True),
            reason="Late finding",
        )

    assert row_counts() == before


@pytest.mark.parametrize("lock", ["study", "participant"])
def test_it_refuses_eligibility_answers_when_locked(study, sites, coordinator_site_a, row_counts, lock):
    participant = consented(study, sites[0], coordinator_site_a)
    _lock(lock, participant)
    before = row_counts()

    with pytest.raises(LockedError):
        services.eligibility_record(actor=coordinator_site_a, participant=participant, answers=_answers(study))

    assert row_counts() == before


# ---------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_coordinators_screening_at_once_get_different_subject_codes(study, sites, coordinator_site_a):
    barrier = threading.Barrier(2)
    codes, errors = [], []

    def screen():
        try:
            barrier.wait(timeout=10)
            codes.append(_screen(study, sites[0], coordinator_site_a).subject_code)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=screen) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert sorted(codes) == ["S01-0001", "S01-0002"]
