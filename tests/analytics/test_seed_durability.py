"""``manage.py seed_durability``: the demo gets a definition, a cut and an analysis per study."""

from __future__ import annotations

from io import StringIO

from django.core.management import call_command

from analytics.models import AnalysisJob, DataCut, RemissionDefinitionConfig
from tests.factories import build_study, member
from trials.models import Indication, Role


def test_it_freezes_a_cut_and_requests_an_analysis_per_study(trial, django_capture_on_commit_callbacks):
    out = StringIO()
    with django_capture_on_commit_callbacks() as callbacks:
        call_command("seed_durability", "--study", trial.study.code, stdout=out)

    cut = DataCut.objects.get(study=trial.study)
    assert cut.label == "demo"
    assert AnalysisJob.objects.get(data_cut=cut).spec["grouping"] == "cohort"
    assert len(callbacks) == 2  # the cut's materialisation and the analysis, each enqueued after commit
    assert f"{trial.study.code}: cut #{cut.pk}" in out.getvalue()


def test_a_study_without_a_definition_gets_the_demo_one(db):
    study = build_study(code="treg-t1d-demo", indication=Indication.T1D)
    member("t1d-demo-stats", study, Role.STATISTICIAN)

    call_command("seed_durability", "--study", study.code, stdout=StringIO())

    definition = RemissionDefinitionConfig.objects.get(study=study)
    assert (definition.rule, definition.sap) == ("idaa1c", {"non_responders": "censor"})
