"""``manage.py seed_safety_demo``: add realistic safety data to the demo studies of ``seed_demo``.

Per study: mostly grade 1-2 adverse events, some grade 3, an infusion reaction on the infusion day,
infections, one grade 3 CRS graded by ASTCT that became serious (reported to the sponsor and assessed
as a SUSAR, so a 15-day report is due), an SAE whose 24-hour clock is still running, one reported
late, a fatal event for a participant who died, the DLT definition and an RSI version. Everything is
written through ``safety.services`` as the demo's coordinators and medical monitor, so it obeys the
rules and is audited. Run ``seed_demo`` first (it empties these tables when it rebuilds).
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from safety import services
from safety.dictionaries import ctcae_load_shipped
from safety.models import AdverseEvent, CTCAETerm, ReferenceSafetyInformation, SAECase, StudySafetyProfile
from trials.audit import audit_context
from trials.models import Disposition, Infusion, Participant, Role, Study, StudyMembership
from trials.services import clinical_today

# (CTCAE term, verbatim, category, lowest and highest grade used, weight)
COMMON = (
    ("Headache", "Headache", "OTHER", 1, 2, 8),
    ("Fatigue", "Tiredness", "OTHER", 1, 2, 8),
    ("Nausea", "Nausea", "OTHER", 1, 2, 5),
    ("Fever", "Low-grade fever", "OTHER", 1, 1, 4),
    ("Upper respiratory infection", "Common cold", "INFECTION", 2, 2, 6),  # CTCAE has no grade 1
    ("Urinary tract infection", "Cystitis", "INFECTION", 2, 2, 3),
    ("Rash maculo-papular", "Rash on forearms", "OTHER", 1, 2, 2),
    ("Myalgia", "Muscle aches", "OTHER", 1, 2, 3),
    ("Diarrhea", "Loose stools", "OTHER", 1, 2, 3),
    ("Neutrophil count decreased", "Neutropenia", "OTHER", 1, 3, 2),
    ("Lymphocyte count decreased", "Lymphopenia", "OTHER", 1, 3, 2),
)
RSI_TERMS = {"Infusion related reaction": 2, "Fever": 2, "Fatigue": 2, "Headache": 2, "Cytokine release syndrome": 1}


class Command(BaseCommand):
    help = __doc__.splitlines()[0]

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=20150101)

    def handle(self, *args, seed: int, **options):
        ctcae_load_shipped()
        studies = list(Study.objects.filter(code__startswith="treg-").order_by("code"))
        if not studies:
            raise CommandError("No demo study found: run `manage.py seed_demo` first.")
        for study in studies:
            if AdverseEvent.objects.filter(participant__study=study).exists():
                self.stdout.write(f"{study.code}: already has adverse events; left alone.")
                continue
            counts = StudySeeder(study, random.Random(f"{seed}-{study.code}"), self.stdout).run()
            self.stdout.write(f"{study.code}: {counts['aes']} adverse events, {counts['saes']} SAEs.")


class StudySeeder:
    def __init__(self, study: Study, rng: random.Random, out) -> None:
        self.study, self.rng, self.out = study, rng, out
        self.terms = {t.term: t for t in CTCAETerm.objects.filter(version="5.0")}
        self.today = clinical_today() - dt.timedelta(days=1)
        self.now = timezone.now()
        members = StudyMembership.objects.filter(study=study).select_related("user")
        self.coordinators = {m.site_id: m.user for m in members if m.role == Role.COORDINATOR}
        self.medical_monitor = next((m.user for m in members if m.role == Role.MEDICAL_MONITOR), None)
        self.data_manager = next((m.user for m in members if m.role == Role.DATA_MANAGER), None)
        if self.medical_monitor is None or self.data_manager is None:
            raise CommandError(f"{study.code} has no medical monitor or data manager.")
        self.counts = {"aes": 0, "saes": 0}

    def run(self) -> dict[str, int]:
        infusions = list(
            Infusion.objects.filter(participant__study=self.study, number=1, voided_at=None)
            .select_related("participant__site", "participant__cohort")
            .order_by("start_at")
        )
        if not infusions:
            return self.counts
        self.configure(infusions[0].infusion_date)
        left = dict(
            Disposition.objects.filter(participant__study=self.study).values_list("participant_id", "disposition_date")
        )
        for infusion in infusions:
            self.common_events(infusion, left.get(infusion.participant_id))
        self.infusion_reaction(infusions[min(1, len(infusions) - 1)])
        self.crs(infusions[-1])
        veterans = [i for i in infusions if (self.today - i.infusion_date).days > 60 and i.participant_id not in left]
        if len(veterans) >= 2:
            self.infection_sae(veterans[0], aware_hours_ago=30, send=True)  # reported a few hours late
            self.infection_sae(veterans[1], aware_hours_ago=20, send=False)  # 24 h clock still running
        self.fatal_event()
        return self.counts

    def coordinator(self, participant: Participant):
        return self.coordinators.get(participant.site_id)

    def configure(self, first_infusion: dt.date) -> None:
        with audit_context(actor=self.data_manager, reason="demo configuration", channel="command"):
            StudySafetyProfile.objects.get_or_create(
                study=self.study, defaults={"sponsor_time_zone": "Europe/London", "extra_alert_emails": ""}
            )
            ReferenceSafetyInformation.objects.get_or_create(
                study=self.study,
                version="IB 2.0",
                defaults={"effective_from": first_infusion - dt.timedelta(days=60), "expected_terms": RSI_TERMS},
            )
        if self.study.dlt_definitions.exists():
            return
        services.dlt_definition_create(
            actor=self.data_manager,
            study=self.study,
            config={},
            effective_from=first_infusion - dt.timedelta(days=60),
            reason="Protocol v1.0, section 7.3",
            channel="command",
        )

    def record(self, participant: Participant, **kwargs) -> AdverseEvent:
        actor = self.coordinator(participant)
        ae = services.adverse_event_record(actor=actor, participant=participant, channel="command", **kwargs)
        self.counts["aes"] += 1
        self.counts["saes"] += int(ae.serious)
        return ae

    def dates(self, start: dt.date, end: dt.date, days: int) -> tuple[str, str, bool, str]:
        """(onset, end, ongoing, outcome) for an event of ``days`` starting between start and end."""
        onset = start + dt.timedelta(days=self.rng.randint(0, max((end - start).days, 0)))
        stop = onset + dt.timedelta(days=days)
        if stop >= self.today:
            return onset.isoformat(), "", True, "RECOVERING/RESOLVING"
        return onset.isoformat(), stop.isoformat(), False, "RECOVERED/RESOLVED"

    def common_events(self, infusion: Infusion, left_on: dt.date | None) -> None:
        participant = infusion.participant
        last = min(self.today, left_on or self.today, infusion.infusion_date + dt.timedelta(days=700))
        if last < infusion.infusion_date:
            return
        weights = [w for *_, w in COMMON]
        for _ in range(self.rng.choice((0, 1, 1, 2, 2, 3, 4))):
            term, verbatim, category, low, high, _ = self.rng.choices(COMMON, weights)[0]
            grade = max(low, min(high, self.rng.choices((1, 2, 3), (60, 32, 8))[0]))
            onset, end, ongoing, outcome = self.dates(infusion.infusion_date, last, self.rng.randint(1, 9))
            self.record(
                participant,
                verbatim_term=verbatim,
                ctcae_term=self.terms[term],
                category=category,
                grade=grade,
                onset=onset,
                end=end,
                ongoing=ongoing,
                outcome=outcome,
                action_taken="NOT APPLICABLE",
                causality_product=self.rng.choices(("not related", "unlikely", "possibly"), (45, 40, 15))[0],
                causality_leukapheresis="not related",
                causality_procedures=self.rng.choice(("not related", "unlikely")),
                treatment_given=grade >= 2,
                treatment_details="Symptomatic treatment" if grade >= 2 else "",
            )

    def infusion_reaction(self, infusion: Infusion) -> None:
        day0 = infusion.infusion_date.isoformat()
        self.record(
            infusion.participant,
            verbatim_term="Chills and flushing 20 min into the infusion",
            ctcae_term=self.terms["Infusion related reaction"],
            category="INFUSION REACTION",
            grade=2,
            onset=day0,
            end=day0,
            outcome="RECOVERED/RESOLVED",
            action_taken="DRUG INTERRUPTED",
            causality_product="probably",
            causality_leukapheresis="not related",
            causality_procedures="unlikely",
            treatment_given=True,
            treatment_details="Infusion paused 15 min; chlorphenamine 10 mg IV; resumed at half rate",
        )

    def crs(self, infusion: Infusion) -> None:
        participant = infusion.participant
        onset = min(infusion.infusion_date + dt.timedelta(days=1), self.today)
        actor = self.coordinator(participant)
        ae = self.record(
            participant,
            verbatim_term="Fever and hypotension after Treg infusion",
            ctcae_term=self.terms["Cytokine release syndrome"],
            category="CRS",
            grade=1,
            onset=onset.isoformat(),
            ongoing=True,
            outcome="RECOVERING/RESOLVING",
            action_taken="NOT APPLICABLE",
            causality_product="probably",
            causality_leukapheresis="not related",
            causality_procedures="not related",
        )
        aware = self.now - dt.timedelta(hours=5)
        services.crs_assessment_record(
            actor=actor,
            adverse_event=ae,
            assessed_at=max(aware - dt.timedelta(hours=2), dt.datetime.combine(onset, dt.time(12), tzinfo=dt.UTC)),
            max_temperature_c=Decimal("39.3"),
            hypotension=True,
            vasopressors=1,
            oxygen_device="nasal_cannula",
            oxygen_flow_l_min=Decimal("3"),
            tocilizumab_given=True,
            channel="command",
        )
        ae.refresh_from_db()
        services.adverse_event_update(
            actor=actor,
            adverse_event=ae,
            changes={
                "serious": True,
                "hospitalisation": True,
                "site_aware_at": aware,
                "treatment_given": True,
                "treatment_details": "Tocilizumab 8 mg/kg IV; noradrenaline; O2 3 L/min",
            },
            reason="Admitted to ICU for vasopressor support",
            expected_version=ae.version,
            channel="command",
        )
        self.counts["saes"] += 1
        case = SAECase.objects.get(adverse_event=ae)
        services.sae_report_to_sponsor(
            actor=actor,
            case=case,
            narrative="Fever 39.3 °C and hypotension on day 1 needing noradrenaline and 3 L/min O2; ASTCT grade 3 CRS. "
            "Tocilizumab given; improving.",
            channel="command",
        )
        services.sae_sponsor_assess(
            actor=self.medical_monitor,
            case=case,
            sponsor_causality="probably",
            channel="command",
        )

    def infection_sae(self, infusion: Infusion, *, aware_hours_ago: int, send: bool) -> None:
        participant = infusion.participant
        onset = self.today - dt.timedelta(days=self.rng.randint(2, 6))
        ae = self.record(
            participant,
            verbatim_term="Community-acquired pneumonia",
            ctcae_term=self.terms["Lung infection"],
            category="INFECTION",
            grade=3,
            onset=onset.isoformat(),
            ongoing=True,
            outcome="RECOVERING/RESOLVING",
            serious=True,
            hospitalisation=True,
            site_aware_at=self.now - dt.timedelta(hours=aware_hours_ago),
            action_taken="NOT APPLICABLE",
            causality_product="unlikely",
            causality_leukapheresis="not related",
            causality_procedures="not related",
            treatment_given=True,
            treatment_details="IV co-amoxiclav",
        )
        if send:
            case = SAECase.objects.get(adverse_event=ae)
            services.sae_report_to_sponsor(
                actor=self.coordinator(participant),
                case=case,
                narrative="Admitted with right lower lobe pneumonia; IV antibiotics; stable.",
                channel="command",
            )
            services.sae_sponsor_assess(
                actor=self.medical_monitor,
                case=case,
                sponsor_causality="unlikely",
                expected=False,
                expectedness_rationale="Pneumonia is not listed in IB 2.0",
                channel="command",
            )

    def fatal_event(self) -> None:
        death = (
            Disposition.objects.filter(participant__study=self.study, kind=Disposition.Kind.DEATH)
            .select_related("participant__site")
            .first()
        )
        if death is None or not death.participant.infusions.exists():
            return
        onset = death.death_date - dt.timedelta(days=3)
        self.record(
            death.participant,
            verbatim_term="Urosepsis",
            ctcae_term=self.terms["Sepsis"],
            category="INFECTION",
            grade=5,
            onset=onset.isoformat(),
            end=death.death_date.isoformat(),
            outcome="FATAL",
            serious=True,
            death=True,
            hospitalisation=True,
            site_aware_at=self.now - dt.timedelta(hours=2),
            action_taken="NOT APPLICABLE",
            causality_product="unlikely",
            causality_leukapheresis="not related",
            causality_procedures="not related",
            treatment_given=True,
            treatment_details="IV meropenem, vasopressors",
        )
