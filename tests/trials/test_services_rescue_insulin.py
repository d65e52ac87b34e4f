"""Rescue therapies (any indication) and the T1D insulin log: every rule accepted and refused, voiding,
the participant page and its forms, and access. A refused write leaves every casebook table, its
audit-event table and the audit hash chain unchanged."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.urls import reverse

from tests.factories import admin_change, consented, enrolled, infused, member, screened
from tests.trials.conftest import CLINICAL_TODAY
from trials import services
from trials.errors import LockedError, RuleViolation
from trials.models import AuditSeal, Indication, InsulinDoseChange, Participant, RescueTherapy, Role, Study

INFUSED_ON = dt.date(2025, 2, 3)  # the factories' infusion day; consent is on 2025-01-06
CONSENTED_ON = dt.date(2025, 1, 6)


@pytest.fixture
def unchanged(row_counts):
    """Snapshot now; calling the result asserts that nothing was written since (rows, audit events, seals)."""

    def snapshot():
        return row_counts(), AuditSeal.objects.count()

    before = snapshot()

    def check() -> None:
        assert snapshot() == before

    return check


@pytest.fixture
def ms_participant(study, sites, coordinator_site_a):
    return infused(study, sites[0], coordinator_site_a)


@pytest.fixture
def t1d_participant(t1d_study, sites, coordinator_site_a, coordinator_site_b):
    """Infused at site A of the T1D study, where the two coordinators also work (at sites A and B)."""
    member(coordinator_site_a.username, t1d_study, Role.COORDINATOR, sites[0])
    member(coordinator_site_b.username, t1d_study, Role.COORDINATOR, sites[1])
    return infused(t1d_study, sites[0], coordinator_site_a)


def _rescue(participant, actor, **overrides) -> RescueTherapy:
    kwargs = {
        "start_date": dt.date(2025, 4, 1),
        "stop_date": dt.date(2025, 4, 3),
        "category": RescueTherapy.Category.CORTICOSTEROID,
        "agent": " methylprednisolone ",
        "reason": " Disabling relapse ",
    }
    kwargs.update(overrides)
    return services.rescue_therapy_record(actor=actor, participant=participant, **kwargs)


def _insulin(participant, actor, **overrides) -> InsulinDoseChange:
    kwargs = {
        "effective_date": dt.date(2025, 3, 1),
        "total_daily_units": Decimal("24.5"),
        "source": InsulinDoseChange.Source.DIARY,
        "note": " Reduced after hypoglycaemia ",
    }
    kwargs.update(overrides)
    return services.insulin_dose_record(actor=actor, participant=participant, **kwargs)


def _withdraw(participant, actor) -> None:
    services.disposition_record(
        actor=actor,
        participant=participant,
        kind="withdrawn",
        disposition_date=dt.date(2025, 3, 10),
        reason="Moved abroad",
    )


def _lock(lock: str, participant: Participant) -> None:
    with admin_change():
        if lock == "study":
            Study.objects.filter(pk=participant.study_id).update(is_locked=True)
        else:
            Participant.objects.filter(pk=participant.pk).update(is_locked=True)


# ---------------------------------------------------------------------------------------------
# Rescue therapy: accepted
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("indication", "category"),
    [
        (Indication.MS, RescueTherapy.Category.DMT),
        (Indication.T1D, RescueTherapy.Category.INSULIN_INTENSIFICATION),
        (Indication.RA, RescueTherapy.Category.CSDMARD),
    ],
)
def test_a_rescue_therapy_is_recorded_in_every_indication(request, sites, coordinator_site_a, indication, category):
    study = request.getfixturevalue({"MS": "study", "T1D": "t1d_study", "RA": "ra_study"}[indication])
    participant = infused(study, sites[0], coordinator_site_a)

    therapy = _rescue(participant, coordinator_site_a, category=category, stop_date=None)

    therapy.refresh_from_db()
    assert (therapy.start_date, therapy.stop_date, therapy.category) == (dt.date(2025, 4, 1), None, category)
    assert (therapy.agent, therapy.reason) == ("methylprednisolone", "Disabling relapse")
    assert list(participant.rescue_therapies.all()) == [therapy]
    event = RescueTherapy.pgh_event_model.objects.select_related("pgh_context").get(pgh_obj_id=therapy.pk)
    assert event.pgh_label == "insert"
    assert event.pgh_context.metadata["user"] == coordinator_site_a.pk
    assert event.pgh_context.metadata["channel"] == "web"


def test_a_rescue_therapy_may_start_on_the_infusion_day_and_stop_the_same_day(ms_participant, coordinator_site_a):
    therapy = _rescue(ms_participant, coordinator_site_a, start_date=INFUSED_ON, stop_date=INFUSED_ON)

    assert (therapy.start_date, therapy.stop_date) == (INFUSED_ON, INFUSED_ON)


def test_a_rescue_therapy_may_start_and_stop_today(ms_participant, coordinator_site_a, frozen_now):
    therapy = _rescue(ms_participant, coordinator_site_a, start_date=CLINICAL_TODAY, stop_date=CLINICAL_TODAY)

    assert therapy.pk is not None


# ---------------------------------------------------------------------------------------------
# Rescue therapy: refused (nothing written)
# ---------------------------------------------------------------------------------------------


def test_a_rescue_therapy_before_the_infusion_is_refused_naming_the_infusion_date(
    ms_participant, coordinator_site_a, unchanged
):
    with pytest.raises(RuleViolation) as exc:
        _rescue(ms_participant, coordinator_site_a, start_date=INFUSED_ON - dt.timedelta(days=1), stop_date=None)

    assert exc.value.message_dict == {
        "start_date": [
            "The start 2025-02-02 is before the infusion on 2025-02-03: a therapy before dosing is prior "
            "medication, not rescue."
        ]
    }
    unchanged()


def test_a_rescue_therapy_of_a_participant_not_yet_infused_is_refused(study, sites, coordinator_site_a, row_counts):
    participant = enrolled(study, sites[0], coordinator_site_a)
    before = row_counts(), AuditSeal.objects.count()

    with pytest.raises(RuleViolation) as exc:
        _rescue(participant, coordinator_site_a)

    assert exc.value.message_dict == {
        "start_date": ["S01-0001 has not been infused: rescue therapy is recorded after day 0."]
    }
    assert (row_counts(), AuditSeal.objects.count()) == before


def test_a_rescue_therapy_before_consent_is_refused(ms_participant, coordinator_site_a, unchanged):
    with pytest.raises(RuleViolation) as exc:
        _rescue(ms_participant, coordinator_site_a, start_date=CONSENTED_ON - dt.timedelta(days=1), stop_date=None)

    assert exc.value.message_dict == {
        "start_date": ["The rescue therapy date 2025-01-05 is before consent on 2025-01-06."]
    }
    unchanged()


def test_a_rescue_therapy_without_any_consent_is_refused(study, sites, coordinator_site_a, row_counts):
    participant = screened(study, sites[0], coordinator_site_a)
    before = row_counts(), AuditSeal.objects.count()

    with pytest.raises(RuleViolation) as exc:
        _rescue(participant, coordinator_site_a)

    assert exc.value.message_dict == {"start_date": ["S01-0001 has not consented: no rescue therapy before consent."]}
    assert (row_counts(), AuditSeal.objects.count()) == before


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (
            {"start_date": CLINICAL_TODAY + dt.timedelta(days=1), "stop_date": None},
            "start_date",
            "Rescue therapy start 2025-06-03 is in the future.",
        ),
        (
            {"stop_date": CLINICAL_TODAY + dt.timedelta(days=1)},
            "stop_date",
            "Rescue therapy stop 2025-06-03 is in the future.",
        ),
        (
            {"stop_date": dt.date(2025, 3, 31)},
            "stop_date",
            "The stop date 2025-03-31 is before the start on 2025-04-01.",
        ),
        ({"agent": "  "}, "agent", "Name the agent (the drug), e.g. methylprednisolone."),
        ({"reason": ""}, "reason", "Say why the rescue therapy was started."),
        ({"category": "homeopathy"}, "category", "Unknown rescue therapy category 'homeopathy'."),
    ],
)
def test_an_invalid_rescue_therapy_is_refused_on_its_field(
    ms_participant, coordinator_site_a, frozen_now, unchanged, overrides, field, message
):
    with pytest.raises(RuleViolation) as exc:
        _rescue(ms_participant, coordinator_site_a, **overrides)

    assert exc.value.message_dict == {field: [message]}
    unchanged()


@pytest.mark.parametrize("lock", ["study", "participant"])
def test_a_rescue_therapy_in_a_locked_casebook_is_refused(ms_participant, coordinator_site_a, row_counts, lock):
    _lock(lock, ms_participant)
    before = row_counts(), AuditSeal.objects.count()

    with pytest.raises(LockedError, match="is locked"):
        _rescue(ms_participant, coordinator_site_a)

    assert (row_counts(), AuditSeal.objects.count()) == before


def test_a_rescue_therapy_after_withdrawal_is_refused_like_other_efficacy_data(
    ms_participant, coordinator_site_a, row_counts
):
    _withdraw(ms_participant, coordinator_site_a)
    before = row_counts(), AuditSeal.objects.count()

    with pytest.raises(RuleViolation) as exc:
        _rescue(ms_participant, coordinator_site_a, start_date=dt.date(2025, 3, 1), stop_date=None)

    assert exc.value.messages == ["S01-0001 is withdrawn: no rescue therapy can be recorded, only safety follow-up."]
    assert (row_counts(), AuditSeal.objects.count()) == before


def test_the_database_refuses_a_rescue_therapy_stopping_before_it_starts(ms_participant):
    with pytest.raises(IntegrityError, match="rescue_therapy_stop_after_start"), transaction.atomic():
        RescueTherapy.objects.create(
            participant=ms_participant,
            start_date=dt.date(2025, 4, 2),
            stop_date=dt.date(2025, 4, 1),
            category="other",
            agent="x",
            reason="y",
        )


# ---------------------------------------------------------------------------------------------
# Insulin log: accepted
# ---------------------------------------------------------------------------------------------


def test_insulin_dose_changes_build_a_log_including_the_baseline_and_a_stop(t1d_participant, coordinator_site_a):
    baseline = _insulin(
        t1d_participant,
        coordinator_site_a,
        effective_date=CONSENTED_ON,
        total_daily_units=Decimal("48"),
        source="clinic",
        note="",
    )
    reduced = _insulin(t1d_participant, coordinator_site_a)
    stopped = _insulin(t1d_participant, coordinator_site_a, effective_date=dt.date(2025, 5, 1), total_daily_units=0)

    assert list(t1d_participant.insulin_dose_changes.all()) == [baseline, reduced, stopped]
    reduced.refresh_from_db()
    assert (reduced.total_daily_units, reduced.source, reduced.note) == (
        Decimal("24.5"),
        "diary",
        "Reduced after hypoglycaemia",
    )
    assert stopped.total_daily_units == 0
    event = InsulinDoseChange.pgh_event_model.objects.select_related("pgh_context").get(pgh_obj_id=stopped.pk)
    assert (event.pgh_label, event.pgh_context.metadata["user"]) == ("insert", coordinator_site_a.pk)


def test_the_baseline_dose_may_be_logged_before_the_infusion(t1d_study, sites, coordinator_site_a):
    participant = enrolled(t1d_study, sites[0], coordinator_site_a)

    change = _insulin(participant, coordinator_site_a, effective_date=CONSENTED_ON, total_daily_units=Decimal("300"))

    assert change.total_daily_units == Decimal("300")


def test_an_insulin_dose_may_take_effect_today(t1d_participant, coordinator_site_a, frozen_now):
    assert _insulin(t1d_participant, coordinator_site_a, effective_date=CLINICAL_TODAY).pk is not None


# ---------------------------------------------------------------------------------------------
# Insulin log: refused (nothing written)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [Decimal("-0.5"), Decimal("300.5")])
def test_an_insulin_dose_outside_0_to_300_units_is_refused_naming_the_range(
    t1d_participant, coordinator_site_a, unchanged, value
):
    with pytest.raises(RuleViolation) as exc:
        _insulin(t1d_participant, coordinator_site_a, total_daily_units=value)

    assert exc.value.message_dict == {
        "total_daily_units": [f"Total daily insulin (U/day) must be between 0 and 300; {value} is outside that range."]
    }
    unchanged()


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        (
            {"effective_date": CLINICAL_TODAY + dt.timedelta(days=1)},
            "effective_date",
            "Insulin dose change 2025-06-03 is in the future.",
        ),
        (
            {"effective_date": CONSENTED_ON - dt.timedelta(days=1)},
            "effective_date",
            "The insulin dose date 2025-01-05 is before consent on 2025-01-06.",
        ),
        ({"source": "pump"}, "source", "Unknown source 'pump'."),
    ],
)
def test_an_invalid_insulin_dose_is_refused_on_its_field(
    t1d_participant, coordinator_site_a, frozen_now, unchanged, overrides, field, message
):
    with pytest.raises(RuleViolation) as exc:
        _insulin(t1d_participant, coordinator_site_a, **overrides)

    assert exc.value.message_dict == {field: [message]}
    unchanged()


def test_an_insulin_dose_without_any_consent_is_refused(t1d_study, sites, coordinator_site_a, row_counts):
    participant = screened(t1d_study, sites[0], coordinator_site_a)
    before = row_counts(), AuditSeal.objects.count()

    with pytest.raises(RuleViolation) as exc:
        _insulin(participant, coordinator_site_a)

    assert exc.value.message_dict == {"effective_date": ["S01-0001 has not consented: no insulin dose before consent."]}
    assert (row_counts(), AuditSeal.objects.count()) == before


@pytest.mark.parametrize("fixture", ["study", "ra_study"])
def test_an_insulin_log_outside_t1d_is_refused(request, sites, coordinator_site_a, row_counts, fixture):
    participant = infused(request.getfixturevalue(fixture), sites[0], coordinator_site_a)
    before = row_counts(), AuditSeal.objects.count()

    with pytest.raises(RuleViolation) as exc:
        _insulin(participant, coordinator_site_a)

    assert exc.value.messages == ["Insulin dose logs are kept in type 1 diabetes studies only."]
    assert (row_counts(), AuditSeal.objects.count()) == before


def test_a_second_dose_on_the_same_date_is_refused_until_the_first_is_voided(
    t1d_participant, coordinator_site_a, row_counts
):
    first = _insulin(t1d_participant, coordinator_site_a)
    before = row_counts(), AuditSeal.objects.count()

    with pytest.raises(RuleViolation) as exc:
        _insulin(t1d_participant, coordinator_site_a, total_daily_units=Decimal("30"))

    assert exc.value.message_dict == {
        "effective_date": ["A dose of 24.5 U/day from 2025-03-01 is already recorded; void it to enter a correction."]
    }
    assert (row_counts(), AuditSeal.objects.count()) == before

    services.record_void(actor=coordinator_site_a, record=first, reason="diary misread")
    correction = _insulin(t1d_participant, coordinator_site_a, total_daily_units=Decimal("30"))
    assert correction.effective_date == first.effective_date
    assert t1d_participant.insulin_dose_changes.filter(voided_at__isnull=True).get() == correction


def test_the_database_holds_one_current_dose_per_date_and_the_range(t1d_participant, coordinator_site_a):
    first = _insulin(t1d_participant, coordinator_site_a)
    duplicate = {"participant": t1d_participant, "effective_date": first.effective_date, "source": "diary"}
    with pytest.raises(IntegrityError, match="insulin_dose_change_once_per_date"), transaction.atomic():
        InsulinDoseChange.objects.create(total_daily_units=Decimal("10"), **duplicate)
    with pytest.raises(IntegrityError, match="insulin_dose_change_in_range"), transaction.atomic():
        InsulinDoseChange.objects.create(
            participant=t1d_participant, effective_date=dt.date(2025, 3, 2), source="diary", total_daily_units=301
        )


@pytest.mark.parametrize("lock", ["study", "participant"])
def test_an_insulin_dose_in_a_locked_casebook_is_refused(t1d_participant, coordinator_site_a, row_counts, lock):
    _lock(lock, t1d_participant)
    before = row_counts(), AuditSeal.objects.count()

    with pytest.raises(LockedError, match="is locked"):
        _insulin(t1d_participant, coordinator_site_a)

    assert (row_counts(), AuditSeal.objects.count()) == before


def test_an_insulin_dose_after_withdrawal_is_refused(t1d_participant, coordinator_site_a, row_counts):
    _withdraw(t1d_participant, coordinator_site_a)
    before = row_counts(), AuditSeal.objects.count()

    with pytest.raises(RuleViolation) as exc:
        _insulin(t1d_participant, coordinator_site_a)

    assert exc.value.messages == ["S01-0001 is withdrawn: no insulin dose can be recorded, only safety follow-up."]
    assert (row_counts(), AuditSeal.objects.count()) == before


# ---------------------------------------------------------------------------------------------
# Voiding
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rescue", "insulin"])
def test_a_record_is_voided_with_its_reason_and_stays_in_the_audit_trail(
    t1d_participant, coordinator_site_a, unchanged, kind
):
    record = (_rescue if kind == "rescue" else _insulin)(t1d_participant, coordinator_site_a)

    services.record_void(actor=coordinator_site_a, record=record, reason="entered for the wrong participant")

    record = type(record).objects.get(pk=record.pk)
    assert record.voided_at is not None
    assert (record.voided_by, record.void_reason, record.version) == (
        coordinator_site_a,
        "entered for the wrong participant",
        2,
    )
    event = record.pgh_event_model.objects.filter(pgh_obj_id=record.pk).order_by("-pgh_id").first()
    assert (event.pgh_label, event.pgh_context.metadata["reason"]) == (
        "update",
        "void: entered for the wrong participant",
    )


@pytest.mark.parametrize("kind", ["rescue", "insulin"])
def test_voiding_needs_a_reason_and_a_role_at_the_site(
    t1d_participant, coordinator_site_a, coordinator_site_b, row_counts, kind
):
    record = (_rescue if kind == "rescue" else _insulin)(t1d_participant, coordinator_site_a)
    before = row_counts(), AuditSeal.objects.count()

    with pytest.raises(RuleViolation, match="A reason is required"):
        services.record_void(actor=coordinator_site_a, record=record, reason=" ")
    with pytest.raises(PermissionDenied):
        services.record_void(actor=coordinator_site_b, record=record, reason="not mine")

    assert (row_counts(), AuditSeal.objects.count()) == before
    assert type(record).objects.get(pk=record.pk).voided_at is None


# ---------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------


def _url(name: str, participant) -> str:
    return reverse(f"trials:{name}", args=[participant.pk])


def test_a_coordinator_records_a_rescue_therapy_and_sees_it_on_the_page(client, ms_participant, coordinator_site_a):
    client.force_login(coordinator_site_a)
    page = client.get(_url("participant_detail", ms_participant)).content.decode()
    assert "Rescue therapies" in page
    assert _url("rescue_therapy_record", ms_participant) in page
    assert "Insulin log" not in page  # MS

    response = client.post(
        _url("rescue_therapy_record", ms_participant),
        {
            "category": "dmt",
            "agent": "ocrelizumab",
            "start_date": "2025-05-02",
            "reason": "New Gd-enhancing lesions",
        },
        follow=True,
    )

    therapy = ms_participant.rescue_therapies.get()
    assert (therapy.category, therapy.agent, therapy.start_date, therapy.stop_date) == (
        "dmt",
        "ocrelizumab",
        dt.date(2025, 5, 2),
        None,
    )
    event = RescueTherapy.pgh_event_model.objects.select_related("pgh_context").get(pgh_obj_id=therapy.pk)
    assert event.pgh_context.metadata["channel"] == "web"
    page = response.content.decode()
    assert "ocrelizumab" in page
    assert "New disease-modifying therapy" in page
    assert "ongoing" in page


def test_a_refused_rescue_therapy_shows_the_message_on_its_field_and_saves_nothing(
    client, ms_participant, coordinator_site_a, unchanged
):
    client.force_login(coordinator_site_a)

    response = client.post(
        _url("rescue_therapy_record", ms_participant),
        {"category": "corticosteroid", "agent": "prednisolone", "start_date": "2025-01-20", "reason": "Flare"},
    )

    assert response.status_code == 200
    assert "is before the infusion on 2025-02-03" in response.content.decode()
    unchanged()


def test_the_t1d_page_shows_the_insulin_log_and_since_when_the_participant_is_insulin_free(
    client, t1d_participant, coordinator_site_a
):
    client.force_login(coordinator_site_a)
    _insulin(t1d_participant, coordinator_site_a, effective_date=CONSENTED_ON, total_daily_units=Decimal("48"))
    for day in ("2025-04-01", "2025-04-15"):
        response = client.post(
            _url("insulin_dose_record", t1d_participant),
            {"effective_date": day, "total_daily_units": "0", "source": "diary"},
        )
        assert response.status_code == 302

    page = client.get(_url("participant_detail", t1d_participant)).content.decode()

    assert "Insulin log" in page
    assert "48.0" in page
    assert "Patient diary" in page
    assert 'data-testid="insulin-free-since"' in page
    assert "since 2025-04-01" in page  # the start of the current run of 0 U/day

    _insulin(t1d_participant, coordinator_site_a, effective_date=dt.date(2025, 5, 1), total_daily_units=Decimal("8"))
    page = client.get(_url("participant_detail", t1d_participant)).content.decode()
    assert 'data-testid="insulin-free-since"' not in page


def test_a_refused_insulin_dose_shows_the_range_on_its_field(client, t1d_participant, coordinator_site_a, unchanged):
    client.force_login(coordinator_site_a)

    response = client.post(
        _url("insulin_dose_record", t1d_participant),
        {"effective_date": "2025-03-01", "total_daily_units": "350", "source": "clinic"},
    )

    assert response.status_code == 200
    assert "must be between 0 and 300" in response.content.decode()
    unchanged()


def test_a_monitor_sees_the_sections_without_add_buttons_and_gets_403_on_the_forms(
    client, t1d_participant, t1d_study, sites, coordinator_site_a, row_counts
):
    _rescue(t1d_participant, coordinator_site_a, category="insulin_intensification", agent="insulin aspart")
    monitor = member("monitor_t1d", t1d_study, Role.MONITOR, sites[0])
    client.force_login(monitor)
    before = row_counts()

    page = client.get(_url("participant_detail", t1d_participant)).content.decode()
    assert "insulin aspart" in page
    assert "Insulin log" in page
    assert "Record a rescue therapy" not in page
    assert "Record a dose change" not in page
    for name, data in (
        ("rescue_therapy_record", {"category": "other", "agent": "x", "start_date": "2025-03-01", "reason": "y"}),
        ("insulin_dose_record", {"effective_date": "2025-03-01", "total_daily_units": "10", "source": "diary"}),
    ):
        assert client.get(_url(name, t1d_participant)).status_code == 403
        assert client.post(_url(name, t1d_participant), data).status_code == 403
    assert row_counts() == before


def test_a_coordinator_of_another_site_gets_404_and_writes_nothing(
    client, t1d_participant, coordinator_site_b, row_counts
):
    client.force_login(coordinator_site_b)
    before = row_counts(), AuditSeal.objects.count()

    assert client.get(_url("participant_detail", t1d_participant)).status_code == 404
    for name, data in (
        ("rescue_therapy_record", {"category": "other", "agent": "x", "start_date": "2025-03-01", "reason": "y"}),
        ("insulin_dose_record", {"effective_date": "2025-03-01", "total_daily_units": "10", "source": "diary"}),
    ):
        assert client.get(_url(name, t1d_participant)).status_code == 404
        assert client.post(_url(name, t1d_participant), data).status_code == 404
    assert (row_counts(), AuditSeal.objects.count()) == before


def test_the_page_costs_the_same_queries_with_more_rescue_and_insulin_records(
    client, t1d_participant, coordinator_site_a, django_assert_max_num_queries
):
    client.force_login(coordinator_site_a)
    url = _url("participant_detail", t1d_participant)

    def queries() -> int:
        with django_assert_max_num_queries(100) as captured:
            assert client.get(url).status_code == 200
        return len(captured.captured_queries)

    _rescue(t1d_participant, coordinator_site_a)
    _insulin(t1d_participant, coordinator_site_a)
    few = queries()
    for month in (4, 5, 6):
        _rescue(t1d_participant, coordinator_site_a, start_date=dt.date(2025, month, 2), stop_date=None)
        _insulin(t1d_participant, coordinator_site_a, effective_date=dt.date(2025, month, 1))
    assert queries() == few


def test_a_consented_participant_in_screening_may_log_insulin_but_not_rescue(t1d_study, sites, coordinator_site_a):
    participant = consented(t1d_study, sites[0], coordinator_site_a)

    assert _insulin(participant, coordinator_site_a, effective_date=CONSENTED_ON).pk is not None
    with pytest.raises(RuleViolation, match="has not been infused"):
        _rescue(participant, coordinator_site_a)
