"""Bad AE input gets field messages, all of them at once, and saves nothing (never a 500): required
fields, the participant's timeline, text bounds and characters, and dates written in other scripts."""

from __future__ import annotations

import datetime as dt
import html
import unicodedata

import pytest
from django.urls import reverse

from safety import services
from safety.models import AdverseEvent, SAECase
from tests.safety.conftest import ae_kwargs
from trials.errors import RuleViolation
from trials.services import disposition_record

REQUIRED = ("category", "verbatim_term", "ctcae_term", "grade", "onset", "outcome", "action_taken")


def _post(ctcae, **overrides) -> dict:
    data = {
        "category": "OTHER",
        "verbatim_term": "Headache after infusion",
        "ctcae_term": str(ctcae["Headache"].pk),
        "grade": "2",
        "onset": "2025-02-10",
        "end": "2025-02-12",
        "outcome": "RECOVERED/RESOLVED",
        "time_zone": "UTC",
        "causality_product": "possibly",
        "action_taken": "NOT APPLICABLE",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def _field_errors(response, field: str) -> list[str]:
    return response.context["form"].errors.get(field, [])


def _record(actor, participant, ctcae, **overrides):
    return services.adverse_event_record(actor=actor, participant=participant, **ae_kwargs(ctcae, **overrides))


class TestRequiredFieldsOnThePage:
    def test_an_empty_form_is_refused_field_by_field_and_saves_nothing(
        self, client, coordinator_site_a, participant, ctcae
    ):
        client.force_login(coordinator_site_a)
        response = client.post(reverse("safety:ae_create", args=[participant.pk]), {})
        assert response.status_code == 200
        for field in REQUIRED:
            assert _field_errors(response, field), field
        assert _field_errors(response, "ctcae_term") == ["Choose the CTCAE term."]
        assert (AdverseEvent.objects.count(), SAECase.objects.count()) == (0, 0)

    @pytest.mark.parametrize("missing", REQUIRED)
    def test_each_missing_required_field_gets_its_message(
        self, client, coordinator_site_a, participant, ctcae, missing
    ):
        client.force_login(coordinator_site_a)
        response = client.post(reverse("safety:ae_create", args=[participant.pk]), _post(ctcae, **{missing: None}))
        assert response.status_code == 200
        assert _field_errors(response, missing)
        assert 'class="field-error"' in response.content.decode()
        assert (AdverseEvent.objects.count(), SAECase.objects.count()) == (0, 0)

    @pytest.mark.parametrize("empty", ["ctcae_term", "verbatim_term", "grade", "onset", "outcome"])
    def test_an_empty_required_value_is_refused_too(self, client, coordinator_site_a, participant, ctcae, empty):
        client.force_login(coordinator_site_a)
        response = client.post(reverse("safety:ae_create", args=[participant.pk]), _post(ctcae, **{empty: ""}))
        assert response.status_code == 200
        assert _field_errors(response, empty)
        assert not AdverseEvent.objects.exists()

    def test_the_page_marks_the_required_fields(self, client, coordinator_site_a, participant):
        client.force_login(coordinator_site_a)
        page = client.get(reverse("safety:ae_create", args=[participant.pk]))
        form = page.context["form"]
        for field in REQUIRED:
            assert form.fields[field].required, field
            assert " required" in str(form[field]), field
        assert " required" not in str(form["end"])

    def test_form_errors_and_rule_problems_come_back_together(self, client, coordinator_site_a, participant, ctcae):
        # The term is missing (the form's check) and the end is before the onset and the grade 5 is
        # not fatal (the service's rules): one answer names all of them.
        client.force_login(coordinator_site_a)
        response = client.post(
            reverse("safety:ae_create", args=[participant.pk]),
            _post(ctcae, verbatim_term="", onset="2025-02-10", end="2025-02-08", outcome="RECOVERED/RESOLVED"),
        )
        assert response.status_code == 200
        assert _field_errors(response, "verbatim_term")
        assert _field_errors(response, "end") == ["End date 2025-02-08 is before onset 2025-02-10."]
        assert not AdverseEvent.objects.exists()

    def test_a_correction_with_a_missing_field_is_refused_with_the_rule_problems(
        self, client, coordinator_site_a, participant, ctcae
    ):
        ae = _record(coordinator_site_a, participant, ctcae)
        client.force_login(coordinator_site_a)
        response = client.post(
            reverse("safety:ae_update", args=[ae.pk]),
            _post(ctcae, ctcae_term="", end="2025-02-01", version="1", reason=""),
        )
        assert response.status_code == 200
        assert _field_errors(response, "ctcae_term") == ["Choose the CTCAE term."]
        assert _field_errors(response, "reason")
        assert _field_errors(response, "end") == ["End date 2025-02-01 is before onset 2025-02-10."]
        ae.refresh_from_db()
        assert (ae.version, ae.end) == (1, "2025-02-11")


class TestRequiredFieldsInTheService:
    def test_a_missing_ctcae_term_is_a_field_message_not_a_crash(self, participant, coordinator_site_a, ctcae):
        with pytest.raises(RuleViolation) as error:
            _record(coordinator_site_a, participant, ctcae, ctcae_term=None)
        assert error.value.message_dict["ctcae_term"] == ["Choose the CTCAE term."]
        assert not AdverseEvent.objects.exists()

    def test_every_missing_field_is_reported_at_once(self, participant, coordinator_site_a, ctcae):
        with pytest.raises(RuleViolation) as error:
            services.adverse_event_record(
                actor=coordinator_site_a,
                participant=participant,
                verbatim_term="",
                ctcae_term=None,
                grade=None,
                onset="",
                outcome="",
                action_taken="",
            )
        fields = set(error.value.message_dict)
        assert {"verbatim_term", "ctcae_term", "grade", "onset", "outcome", "end", "action_taken"} <= fields
        assert not AdverseEvent.objects.exists()


class TestTimeline:
    def test_an_onset_or_end_after_the_participants_death_is_refused(
        self, participant, coordinator_site_a, ctcae, safety_counts
    ):
        disposition_record(
            actor=coordinator_site_a,
            participant=participant,
            kind="death",
            disposition_date=dt.date(2025, 2, 20),
            death_date=dt.date(2025, 2, 20),
            reason="Road traffic accident",
        )
        before = safety_counts()
        with pytest.raises(RuleViolation) as error:
            _record(coordinator_site_a, participant, ctcae, onset="2025-02-21", end="2025-02-22")
        assert error.value.message_dict["onset"] == ["Onset 2025-02-21 is after the participant's death on 2025-02-20."]
        assert error.value.message_dict["end"] == [
            "End date 2025-02-22 is after the participant's death on 2025-02-20."
        ]
        assert safety_counts() == before
        # The day of death itself, and a month that may contain it, are allowed.
        assert _record(coordinator_site_a, participant, ctcae, onset="2025-02-18", end="2025-02-20").pk
        assert _record(coordinator_site_a, participant, ctcae, onset="2025-02", end="2025-02").pk

    def test_an_onset_before_consent_is_still_refused(self, participant, coordinator_site_a, ctcae):
        with pytest.raises(RuleViolation) as error:
            _record(coordinator_site_a, participant, ctcae, onset="2025-01-05", end="2025-01-06")
        assert "before informed consent on 2025-01-06" in error.value.message_dict["onset"][0]


class TestText:
    def test_a_megabyte_of_treatment_details_is_refused(self, participant, coordinator_site_a, ctcae, safety_counts):
        before = safety_counts()
        with pytest.raises(RuleViolation) as error:
            _record(coordinator_site_a, participant, ctcae, treatment_given=True, treatment_details="x" * 1_048_576)
        assert error.value.message_dict["treatment_details"] == [
            "The treatment details is too long: 1,048,576 characters, at most 2,000 are allowed."
        ]
        assert safety_counts() == before

    def test_the_page_refuses_it_too_without_saving(self, client, coordinator_site_a, participant, ctcae):
        client.force_login(coordinator_site_a)
        response = client.post(
            reverse("safety:ae_create", args=[participant.pk]),
            _post(ctcae, treatment_given="on", treatment_details="x" * 1_048_576),
        )
        assert response.status_code == 200
        assert _field_errors(response, "treatment_details")
        assert not AdverseEvent.objects.exists()

    @pytest.mark.parametrize(
        "term",
        ["Head\u202eache", "Head\x00ache", "Head\u2066ache", "Head\nache", "Head\u200bache"],
        ids=["rlo", "nul", "lri", "newline", "zero-width-space"],
    )
    def test_control_bidi_and_invisible_characters_in_the_verbatim_term_are_refused(
        self, participant, coordinator_site_a, ctcae, term
    ):
        with pytest.raises(RuleViolation) as error:
            _record(coordinator_site_a, participant, ctcae, verbatim_term=term)
        assert error.value.message_dict["verbatim_term"][0].startswith("The verbatim term contains")
        assert not AdverseEvent.objects.exists()

    def test_text_is_stored_in_nfc(self, participant, coordinator_site_a, ctcae):
        decomposed = unicodedata.normalize("NFD", "Céphalée après perfusion")
        ae = _record(
            coordinator_site_a,
            participant,
            ctcae,
            verbatim_term=decomposed,
            treatment_given=True,
            treatment_details=f"Paracétamol 1 g\n{decomposed}",
        )
        ae.refresh_from_db()
        assert ae.verbatim_term == unicodedata.normalize("NFC", decomposed)
        assert ae.verbatim_term != decomposed
        assert ae.treatment_details == unicodedata.normalize("NFC", f"Paracétamol 1 g\n{decomposed}")

    @pytest.mark.parametrize(
        "onset",
        ["٢٠٢٥-٠٢-١٠", "２０２５-02-10", "2025-02-10\u200b", "2025-02-1O"],
        ids=["arabic-indic", "full-width", "zero-width-space", "letter-o"],
    )
    def test_a_date_in_anything_but_ascii_digits_is_refused(self, participant, coordinator_site_a, ctcae, onset):
        with pytest.raises(RuleViolation) as error:
            services.adverse_event_record(
                actor=coordinator_site_a, participant=participant, **{**ae_kwargs(ctcae), "onset": onset}
            )
        assert "onset" in error.value.message_dict
        assert not AdverseEvent.objects.exists()

    def test_an_escaped_hostile_term_never_reaches_the_page(self, client, coordinator_site_a, participant, ctcae):
        client.force_login(coordinator_site_a)
        response = client.post(
            reverse("safety:ae_create", args=[participant.pk]), _post(ctcae, verbatim_term="a\u202eb")
        )
        assert response.status_code == 200
        assert "bidirectional override" in html.unescape(response.content.decode())
        assert not AdverseEvent.objects.exists()
