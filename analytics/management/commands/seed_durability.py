"""``manage.py seed_durability``: give each study a durability analysis for the demo. See the help."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from analytics import selectors, services
from analytics.models import AnalysisJob
from trials.models import Indication, Role, Study, StudyMembership
from trials.services import clinical_today

# The demo's choices, one per indication. A real study's statistician sets its own (a SAP decision).
DEMO_DEFINITIONS = {
    Indication.RA: ("DAS28-CRP remission", "das28_crp4"),
    Indication.T1D: ("IDAA1c partial remission", "idaa1c"),
    Indication.MS: ("NEDA-3", "neda3"),
}


class Command(BaseCommand):
    help = (
        "For each study (or the --study codes): if it has no remission definition, save the demo's one "
        "(RA: DAS28-CRP(4) < 2.6; T1D: IDAA1c <= 9; MS: NEDA-3 over the past year) with non-responders "
        "censored; freeze a data cut as of today; and request a by-cohort time-to-relapse analysis. "
        "Without a broker (CELERY_BROKER_URL empty) the analysis runs inline; with one it is queued for "
        "the workers. Acts as the study's first statistician."
    )

    def add_arguments(self, parser):
        parser.add_argument("--study", action="append", default=[], help="Study code (repeatable).")

    def handle(self, *args, **options):
        studies = Study.objects.order_by("code")
        if options["study"]:
            studies = studies.filter(code__in=options["study"])
        if not studies:
            raise CommandError("No study to analyse.")
        for study in studies:
            membership = (
                StudyMembership.objects.filter(study=study, role=Role.STATISTICIAN).select_related("user").first()
            )
            if membership is None:
                self.stderr.write(f"{study.code}: no statistician; skipped")
                continue
            actor = membership.user
            if selectors.definition_current(study=study) is None:
                name, rule = DEMO_DEFINITIONS[study.indication]
                services.remission_definition_set(
                    actor=actor,
                    study=study,
                    name=name,
                    rule=rule,
                    parameters={},
                    sap={"non_responders": "censor"},
                    reason="demo definition (seed_durability)",
                    channel="command",
                )
            cut = services.datacut_create(
                actor=actor, study=study, cut_date=clinical_today(), label="demo", channel="command"
            )
            job = services.analysis_request(actor=actor, data_cut=cut, spec={"grouping": "cohort"}, channel="command")
            job = AnalysisJob.objects.get(pk=job.pk)
            self.stdout.write(
                f"{study.code}: cut #{cut.pk} ({cut.manifest['frames']['assessments']['rows']} assessments), "
                f"analysis #{job.pk} {job.status}{': ' + job.error if job.error else ''}"
            )
