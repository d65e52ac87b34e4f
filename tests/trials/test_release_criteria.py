"""Release criteria of the study build: an infusion outside them needs the coordinator's confirmation
and becomes a protocol deviation; and a recorded infusion is corrected with a reason, audited."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils.html import escape

from tests.factories import admin_change, enrolled, infused, infusion_kwargs, member
from trials import services
from trials.errors import ConflictError, RuleViolation
from trials.models import Infusion, ProtocolDeviation, Role, Study, Visit

DAY0 = dt.datetime(2025, 2, 3, 9, 0, tzinfo=dt.UTC)
LOW_VIABILITY = "Outside the release criteria: Viability 0.5% is below the release minimum of 70.0%."


def _infuse(participant, actor, **overrides):
    kwargs = infusion_kwargs(participant, start=DAY0)
    kwargs.update(overrides)
    return services.infusion_record(actor=actor, participant=participant, **kwargs)


def test_a_viability_below_the_release_minimum_needs_a_confirmation(study, sites, coordinator_site_a, row_counts):
    participant = enrolled(study, sites[0], coordinator_site_a)
    before = row_counts()

    with pytest.raises(RuleViolation) as exc:
        _infuse(participant, coordinator_site_a, viability_pct=Decimal("0.5"))

    assert list(exc.value.message_dict) == ["confirm_outside_criteria"]
    assert exc.value.message_dict["confirm_outside_criteria"][0].startswith(LOW_VIABILITY)
    assert row_counts() == before


def test_a_confirmed_infusion_outside_the_criteria_is_a_protocol_deviation(study, sites, coordinator_site_a):
    participant = enrolled(study, sites[0], coordinator_site_a)

    infusion = _infuse(participant, coordinator_site_a, viability_pct=Decimal("0.5"), confirm_outside_criteria=True)

    deviation = ProtocolDeviation.objects.get(infusion=infusion)
    assert deviation.category == ProtocolDeviation.Category.RELEASE
    assert deviation.description == "Viability 0.5% is below the release minimum of 70.0%."
    assert deviation.system_detected


def test_the_endotoxin_maximum_applies_when_the_study_sets_one(study, sites, coordinator_site_a):
    with admin_change("endotoxin specification"):
        Study.objects.filter(pk=study.pk).update(release_max_endotoxin_eu_per_kg=Decimal("5"))
    participant = enrolled(study, sites[0], coordinator_site_a)

    with pytest.raises(RuleViolation, match="No endotoxin result was recorded"):
        _infuse(participant, coordinator_site_a)
    with pytest.raises(RuleViolation, match=r"Endotoxin 5.5 EU/kg is above the release maximum of 5.00 EU/kg"):
        _infuse(participant, coordinator_site_a, endotoxin_eu_per_kg=Decimal("5.5"))

    infusion = _infuse(participant, coordinator_site_a, endotoxin_eu_per_kg=Decimal("0.8"))
    assert infusion.endotoxin_eu_per_kg == Decimal("0.8")
    assert not ProtocolDeviation.objects.exists()


def test_a_study_without_a_viability_minimum_asks_nothing(study, sites, coordinator_site_a):
    with admin_change("no viability specification"):
        Study.objects.filter(pk=study.pk).update(release_min_viability_pct=None)
    participant = enrolled(study, sites[0], coordinator_site_a)

    _infuse(participant, coordinator_site_a, viability_pct=Decimal("0.5"))

    assert not ProtocolDeviation.objects.exists()


def _post(**overrides) -> dict:
    data = {
        "manufacturing_lot": "LOT-2025-017",
        "apheresis_date": "2025-01-13",
        "release_passed": "on",
        "viability_pct": "0.5",
        "total_viable_cells": "70000000",
        "weight_kg": "70.0",
        "time_zone": "UTC",
        "start_at": "2025-02-03T09:00",
        "end_at": "2025-02-03T09:45",
    }
    data.update(overrides)
    return data


def test_the_infusion_form_asks_for_the_confirmation_then_records_the_deviation(
    client, study, sites, coordinator_site_a
):
    participant = enrolled(study, sites[0], coordinator_site_a)
    client.force_login(coordinator_site_a)
    url = f"/participants/{participant.pk}/infusion/"
    assert 'name="confirm_outside_criteria"' not in client.get(url).content.decode()

    response = client.post(url, _post())

    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="confirm_outside_criteria"' in page
    assert escape(LOW_VIABILITY) in page
    assert not Infusion.objects.exists()

    response = client.post(url, _post(confirm_outside_criteria="on"), follow=True)

    assert response.redirect_chain
    assert "a protocol deviation was recorded" in response.content.decode()
    assert ProtocolDeviation.objects.get().category == ProtocolDeviation.Category.RELEASE


def test_the_api_takes_the_confirmation_too(study, sites, coordinator_site_a):
    from rest_framework.test import APIClient

    participant = enrolled(study, sites[0], coordinator_site_a)
    api = APIClient()
    api.force_authenticate(coordinator_site_a)
    body = {
        "apheresis_date": "2025-01-14",
        "manufacturing_lot": "LOT-7",
        "release_passed": True,
        "viability_pct": "0.5",
        "total_viable_cells": "70000000",
        "weight_kg": "70.0",
        "start_at": "2025-02-03T09:00:00Z",
        "end_at": "2025-02-03T09:40:00Z",
    }
    url = f"/api/v1/participants/{participant.pk}/infusions/"

    refused = api.post(url, body, format="json")
    assert refused.status_code == 400
    assert "confirm_outside_criteria" in refused.json()
    assert not Infusion.objects.exists()

    assert api.post(url, {**body, "confirm_outside_criteria": True}, format="json").status_code == 201
    assert ProtocolDeviation.objects.get().category == ProtocolDeviation.Category.RELEASE


def test_the_study_build_edits_the_release_criteria_in_the_admin(admin_client, study):
    page = admin_client.get(f"/admin/trials/study/{study.pk}/change/").content.decode()

    assert 'name="release_min_viability_pct"' in page
    assert 'name="release_max_endotoxin_eu_per_kg"' in page
    assert 'name="min_age_years"' in page


# ---------------------------------------------------------------------------------------------
# Correcting an infusion
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def participant(study, sites, coordinator_site_a):
    return infused(study, sites[0], coordinator_site_a)


def _correction(infusion, **overrides) -> dict:
    kwargs = {
        name: getattr(infusion, name)
        for name in (
            "apheresis_date",
            "manufacturing_lot",
            "release_passed",
            "viability_pct",
            "total_viable_cells",
            "weight_kg",
            "start_at",
            "end_at",
            "interrupted",
            "interruption_reason",
            "premedication",
            "volume_ml",
            "endotoxin_eu_per_kg",
        )
    }
    kwargs.update(overrides)
    return kwargs


def test_a_correction_needs_a_reason_and_is_audited_with_it(participant, coordinator_site_a):
    infusion = participant.infusions.get()

    with pytest.raises(RuleViolation) as exc:
        services.infusion_correct(
            actor=coordinator_site_a,
            infusion=infusion,
            reason=" ",
            expected_version=infusion.version,
            **_correction(infusion, weight_kg=Decimal("80")),
        )
    assert exc.value.message_dict == {"reason": ["A reason for change is required to correct an infusion."]}

    corrected = services.infusion_correct(
        actor=coordinator_site_a,
        infusion=infusion,
        reason="weight transcribed from the wrong visit",
        expected_version=infusion.version,
        **_correction(infusion, weight_kg=Decimal("80")),
    )

    assert corrected.weight_kg == Decimal("80")
    assert corrected.dose_cells_per_kg == Decimal("875000")  # 70e6 cells / 80 kg, recomputed
    event = Infusion.pgh_event_model.objects.filter(pgh_obj_id=infusion.pk).order_by("-pgh_id").first()
    assert event.weight_kg == Decimal("80")
    assert event.pgh_context.metadata["reason"] == "weight transcribed from the wrong visit"
    assert event.pgh_context.metadata["user"] == coordinator_site_a.pk
    # 875,000 cells/kg is 12.5 % under the plan: inside the 20 % tolerance, so no deviation.
    assert not ProtocolDeviation.objects.filter(voided_at__isnull=True).exists()


def test_a_correction_that_fixes_the_dose_voids_the_obsolete_deviation(study, sites, coordinator_site_a):
    participant = enrolled(study, sites[0], coordinator_site_a)
    infusion = _infuse(participant, coordinator_site_a, total_viable_cells=Decimal("700000000"))  # 10x the plan
    assert ProtocolDeviation.objects.get(voided_at__isnull=True).category == ProtocolDeviation.Category.DOSE

    services.infusion_correct(
        actor=coordinator_site_a,
        infusion=infusion,
        reason="an extra zero in the cell count",
        expected_version=infusion.version,
        **_correction(infusion, total_viable_cells=Decimal("70000000")),
    )

    deviation = ProtocolDeviation.objects.get()
    assert deviation.voided_at is not None
    assert deviation.void_reason == "infusion corrected: an extra zero in the cell count"


def test_moving_day_0_moves_the_visit_windows(participant, coordinator_site_a):
    infusion = participant.infusions.get()
    start = DAY0 + dt.timedelta(days=1)

    services.infusion_correct(
        actor=coordinator_site_a,
        infusion=infusion,
        reason="infused the next morning",
        expected_version=infusion.version,
        **_correction(infusion, start_at=start, end_at=start + dt.timedelta(minutes=45)),
    )

    d7 = Visit.objects.get(participant=participant, definition__code="d7")
    assert (d7.planned_date, d7.window_start, d7.window_end) == (
        dt.date(2025, 2, 11),
        dt.date(2025, 2, 10),
        dt.date(2025, 2, 12),
    )
    assert Infusion.objects.get(pk=infusion.pk).infusion_date == dt.date(2025, 2, 4)


def test_day_0_cannot_move_after_a_recorded_visit(participant, coordinator_site_a):
    infusion = participant.infusions.get()
    d0 = participant.visits.get(definition__code="d0")
    services.visit_record(actor=coordinator_site_a, visit=d0, actual_date=dt.date(2025, 2, 3))
    start = DAY0 + dt.timedelta(days=2)

    with pytest.raises(RuleViolation, match="Day 0 took place on 2025-02-03, before this infusion date"):
        services.infusion_correct(
            actor=coordinator_site_a,
            infusion=infusion,
            reason="wrong day",
            expected_version=infusion.version,
            **_correction(infusion, start_at=start, end_at=start + dt.timedelta(minutes=45)),
        )
    assert Infusion.objects.get(pk=infusion.pk).infusion_date == dt.date(2025, 2, 3)


def test_a_stale_correction_is_a_conflict(participant, coordinator_site_a):
    infusion = participant.infusions.get()

    with pytest.raises(ConflictError):
        services.infusion_correct(
            actor=coordinator_site_a,
            infusion=infusion,
            reason="late",
            expected_version=infusion.version + 1,
            **_correction(infusion, weight_kg=Decimal("71")),
        )
    assert Infusion.objects.get(pk=infusion.pk).weight_kg == Decimal("70")


def test_the_participant_page_links_to_the_correction_form(client, participant, coordinator_site_a):
    infusion = participant.infusions.get()
    client.force_login(coordinator_site_a)
    url = f"/infusions/{infusion.pk}/correct/"

    assert f'href="{url}"' in client.get(f"/participants/{participant.pk}/").content.decode()
    form = client.get(url).content.decode()
    assert 'value="LOT-0001"' in form
    assert 'name="reason"' in form

    data = _post(viability_pct="92.5", apheresis_date="2025-01-13", weight_kg="80.0", manufacturing_lot="LOT-0001")
    refused = client.post(url, {**data, "version": infusion.version})
    assert refused.status_code == 200
    assert Infusion.objects.get(pk=infusion.pk).weight_kg == Decimal("70")

    response = client.post(url, {**data, "version": infusion.version, "reason": "weighed again"}, follow=True)

    assert response.redirect_chain, response.content.decode()[:2000]
    assert Infusion.objects.get(pk=infusion.pk).weight_kg == Decimal("80")
    assert "Infusion 1 corrected" in response.content.decode()


def test_a_monitor_cannot_open_the_correction_form(client, participant, monitor):
    client.force_login(monitor)
    assert client.get(f"/infusions/{participant.infusions.get().pk}/correct/").status_code == 403


def test_another_sites_coordinator_gets_404_on_the_correction_form(client, participant, coordinator_site_b):
    client.force_login(coordinator_site_b)
    assert client.get(f"/infusions/{participant.infusions.get().pk}/correct/").status_code == 404


def test_only_data_entry_roles_correct_through_the_service(participant, study, sites):
    from django.core.exceptions import PermissionDenied

    monitor = member("monitor_b", study, Role.MONITOR, sites[0])
    infusion = participant.infusions.get()
    with pytest.raises(PermissionDenied):
        services.infusion_correct(
            actor=monitor, infusion=infusion, reason="x", expected_version=infusion.version, **_correction(infusion)
        )
