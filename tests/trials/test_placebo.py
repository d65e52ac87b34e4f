"""Placebo (zero-dose) cohorts end to end: the study build accepts a dose of 0 and refuses a negative
one, an infusion in a placebo cohort has no deviation percentage, the casebook labels it, and
querysets can group participants by it."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from tests.factories import admin_change, enrolled, infused, infusion_kwargs
from trials import services
from trials.errors import RuleViolation
from trials.models import DoseCohort, Infusion, Participant, ProtocolDeviation
from trials.rules import dose_deviation_pct

DAY0 = dt.datetime(2025, 2, 3, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def placebo_study(study):
    """The study's first cohort turned into a placebo arm (planned at 0 cells/kg)."""
    with admin_change("cohort 1 is the placebo arm"):
        DoseCohort.objects.filter(study=study, number=1).update(label="Placebo", planned_cells_per_kg=0)
    return study


def _placebo_infusion(participant, actor, **overrides):
    kwargs = infusion_kwargs(participant, start=DAY0, cells=Decimal("0"))
    kwargs.update(viability_pct=None, manufacturing_lot="PLACEBO-01")
    kwargs.update(overrides)
    return services.infusion_record(actor=actor, participant=participant, **kwargs)


def test_the_study_build_accepts_a_placebo_cohort_and_refuses_a_negative_dose(study):
    placebo = DoseCohort(study=study, number=9, label="Placebo", planned_cells_per_kg=Decimal("0"))
    placebo.full_clean()  # accepted
    assert placebo.is_placebo
    assert placebo.dose_label == "Placebo (0 cells)"

    negative = DoseCohort(study=study, number=10, label="Oops", planned_total_cells=Decimal("-5"))
    with pytest.raises(ValidationError) as exc:
        negative.full_clean()
    assert exc.value.message_dict["planned_total_cells"] == [
        "A planned dose cannot be negative (0 is a placebo cohort)."
    ]

    mixed = DoseCohort(study=study, number=11, label="Mixed", planned_cells_per_kg=0, planned_total_cells=1000)
    with pytest.raises(ValidationError, match="One planned dose is 0"):
        mixed.full_clean()


def test_the_database_refuses_a_negative_planned_dose(study):
    with pytest.raises(IntegrityError), transaction.atomic(), admin_change("negative dose"):
        DoseCohort.objects.create(study=study, number=12, label="Bad", planned_cells_per_kg=-1)


def test_an_infusion_in_a_placebo_cohort_is_recorded_without_a_deviation(placebo_study, sites, coordinator_site_a):
    participant = enrolled(placebo_study, sites[0], coordinator_site_a)

    infusion = _placebo_infusion(participant, coordinator_site_a)

    infusion.refresh_from_db()
    assert (infusion.total_viable_cells, infusion.dose_cells_per_kg, infusion.viability_pct) == (0, 0, None)
    assert dose_deviation_pct(infusion, infusion.cohort) is None
    assert not ProtocolDeviation.objects.exists()
    assert participant.visits.count() == 7  # day 0 set the schedule as for any infusion


def test_a_treg_cohort_still_needs_cells_and_a_viability(study, sites, coordinator_site_a):
    participant = enrolled(study, sites[0], coordinator_site_a)

    with pytest.raises(RuleViolation) as exc:
        _placebo_infusion(participant, coordinator_site_a)

    assert exc.value.message_dict == {
        "viability_pct": ["Give the viability (%) of the product."],
        "total_viable_cells": ["Total viable cells must be positive."],
    }
    assert not Infusion.objects.exists()


def test_cells_given_in_a_placebo_cohort_need_confirmation_and_are_a_dose_deviation(
    placebo_study, sites, coordinator_site_a
):
    participant = enrolled(placebo_study, sites[0], coordinator_site_a)

    with pytest.raises(RuleViolation) as exc:
        _placebo_infusion(participant, coordinator_site_a, total_viable_cells=Decimal("1000"))
    assert list(exc.value.message_dict) == ["confirm_outside_criteria"]
    assert not Infusion.objects.exists()

    infusion = _placebo_infusion(
        participant, coordinator_site_a, total_viable_cells=Decimal("1000"), confirm_outside_criteria=True
    )
    deviation = ProtocolDeviation.objects.get(infusion=infusion)
    assert deviation.category == ProtocolDeviation.Category.DOSE
    assert deviation.description == "Cohort 1 is a placebo cohort, but 1,000 viable cells were infused."


def test_participants_group_by_placebo_cohort(placebo_study, sites, coordinator_site_a):
    placebo = enrolled(placebo_study, sites[0], coordinator_site_a)
    with admin_change("cohort 1 full"):
        DoseCohort.objects.filter(study=placebo_study, number=1).update(capacity=1)
    treg = enrolled(placebo_study, sites[0], coordinator_site_a)

    on_placebo = Participant.objects.filter(DoseCohort.placebo_q("cohort__"))
    assert list(on_placebo) == [placebo]
    assert list(Participant.objects.exclude(DoseCohort.placebo_q("cohort__")).filter(cohort__isnull=False)) == [treg]


def test_a_total_cells_placebo_cohort_is_recognised_too(study):
    cohort = DoseCohort(study=study, number=20, label="Sham", planned_total_cells=Decimal("0"))
    assert cohort.is_placebo
    with admin_change("sham cohort"):
        cohort.save()
    assert DoseCohort.objects.filter(DoseCohort.placebo_q()).get() == cohort


def test_the_casebook_page_labels_the_placebo_and_shows_no_percentage(client, placebo_study, sites, coordinator_site_a):
    participant = enrolled(placebo_study, sites[0], coordinator_site_a)
    _placebo_infusion(participant, coordinator_site_a)
    client.force_login(coordinator_site_a)

    page = client.get(f"/participants/{participant.pk}/").content.decode()

    assert "Placebo (0 cells)" in page
    assert "placebo: no planned dose" in page
    assert "within tolerance" not in page


def test_a_placebo_infusion_is_recorded_through_the_form(client, placebo_study, sites, coordinator_site_a):
    participant = enrolled(placebo_study, sites[0], coordinator_site_a)
    client.force_login(coordinator_site_a)
    form_page = client.get(f"/participants/{participant.pk}/infusion/").content.decode()
    assert "placebo (planned dose 0 cells)" in form_page

    response = client.post(
        f"/participants/{participant.pk}/infusion/",
        {
            "manufacturing_lot": "PLACEBO-01",
            "apheresis_date": "2025-01-13",
            "release_passed": "on",
            "viability_pct": "",
            "total_viable_cells": "0",
            "weight_kg": "70.0",
            "time_zone": "UTC",
            "start_at": "2025-02-03T09:00",
            "end_at": "2025-02-03T09:45",
        },
        follow=True,
    )

    assert response.redirect_chain, response.content.decode()[:3000]
    assert "placebo (cohort 1), no planned dose to compare" in response.content.decode()
    assert participant.infusions.get().total_viable_cells == 0


def test_infused_factory_participants_stay_in_treg_cohorts(study, sites, coordinator_site_a):
    participant = infused(study, sites[0], coordinator_site_a)
    assert not participant.cohort.is_placebo
    assert dose_deviation_pct(participant.infusions.get(), participant.cohort) == Decimal("0.0")
