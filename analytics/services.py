"""Writes and business rules of the durability analyses (docs/style.md §1, §6-§11).

* ``remission_definition_set`` — a new version of the study's remission definition and SAP options.
* ``datacut_create`` — freeze the casebook as of a cut date: frames, checksums, audit chain head.
* ``analysis_request`` — get or create the job for (cut, spec hash); a stored result is returned as
  is; otherwise its message goes into the outbox (analytics/outbox.py) and is published after commit.
* ``analysis_run`` — the body of the Celery task: claim the job by compare-and-set, compute, store
  the result exactly once (unique job → result), report progress on the job row as it goes.
* ``analysis_fail`` — record a failure and its message (also called when retries run out).

Jobs whose worker died are re-queued by analytics/job_recovery.py; messages the broker could not take
are published later by the outbox relay.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from analytics import compute, datacut, plots, selectors
from analytics.derivations import REMISSION_RULES, RemissionDefinition
from analytics.job_recovery import Heartbeat, stale_bound
from analytics.models import (
    AnalysisJob,
    AnalysisResult,
    DataCut,
    DataCutFrame,
    RemissionAssessment,
    RemissionDefinitionConfig,
)
from analytics.outbox import outbox_add
from analytics.spec import ENDPOINT_LABELS, AnalysisSpec, spec_parse
from trials.anchors import anchor_on_commit
from trials.audit import audit_context
from trials.errors import RuleViolation
from trials.models import AuditSeal, Study

logger = logging.getLogger(__name__)

# Errors worth retrying: the database or the network went away for a moment.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError, OSError)
# A queued job whose message was never picked up may be enqueued again when it is asked for after
# this long (the compare-and-set claim keeps a second message harmless). A running job whose worker
# stopped reporting is re-queued by beat after TOLERANCE_JOB_STALE_SECONDS (analytics/job_recovery.py).
QUEUED_TOO_LONG = dt.timedelta(minutes=10)
RUN_TASK = "analytics.run_analysis"
MATERIALISE_TASK = "analytics.materialise_remission_assessments"
# pg_advisory_xact_lock(namespace, data cut id) around storing a cut's per-assessment derivations.
_DERIVATIONS_LOCK_NAMESPACE = 7_200_005


class AnalysisError(Exception):
    """The analysis cannot be computed from this data cut; the message says why (shown to users)."""


class ClaimLost(Exception):
    """Another run of the same job took it over; this run stops without writing anything."""


# ---------------------------------------------------------------------------------------------
# Remission definition versions
# ---------------------------------------------------------------------------------------------


def _require(allowed: bool, message: str) -> None:
    if not allowed:
        raise PermissionDenied(message)


@transaction.atomic(durable=True)
def remission_definition_set(
    *,
    actor,
    study: Study,
    name: str,
    rule: str,
    parameters: Mapping[str, Any] | None,
    sap: Mapping[str, Any] | None,
    reason: str,
    channel: str = "web",
) -> RemissionDefinitionConfig:
    """Save the next version of the study's remission definition. Cuts made earlier keep theirs."""
    access = selectors.analytics_access(user=actor, study=study)
    _require(access.can_define, "Your role cannot change the remission definition.")
    parameters, sap = dict(parameters or {}), dict(sap or {})
    if not reason or not reason.strip():
        raise RuleViolation({"reason": "A reason is required."})
    if not name or not name.strip():
        raise RuleViolation({"name": "Name the definition, e.g. 'SDAI remission'."})
    if rule not in REMISSION_RULES:
        raise RuleViolation({"rule": f"Unknown remission rule {rule!r}."})
    if rule not in datacut.SUPPORTED_RULES:
        raise RuleViolation({"rule": f"{rule} needs inputs the casebook does not collect."})
    try:
        RemissionDefinition(study.indication, name.strip(), "0", rule, parameters)
    except ValueError as exc:
        raise RuleViolation({"parameters": str(exc)}) from None
    try:
        datacut.sap_options(sap)
    except ValueError as exc:
        raise RuleViolation({"sap": str(exc)}) from None
    # Lock the study row so two editors cannot both save "the next version".
    Study.objects.select_for_update().get(pk=study.pk)
    latest = RemissionDefinitionConfig.objects.filter(study=study).order_by("-version").first()
    config = RemissionDefinitionConfig(
        study=study,
        version=(latest.version + 1) if latest else 1,
        name=name.strip(),
        rule=rule,
        parameters=parameters,
        sap=sap,
        reason=reason.strip(),
        created_by=actor,
    )
    config.full_clean()
    with audit_context(actor=actor, reason=f"remission definition: {reason.strip()}", channel=channel):
        config.save()
    return config


def definition_of(config: RemissionDefinitionConfig, indication: str) -> RemissionDefinition:
    return RemissionDefinition(indication, config.name, str(config.version), config.rule, dict(config.parameters))


# ---------------------------------------------------------------------------------------------
# Data cuts
# ---------------------------------------------------------------------------------------------

EXCLUSION_RULES = [
    "voided participants, infusions, visits, assessments, MMTT samples, MRI reads, relapses and dispositions",
    "anything dated after the cut date",
    "participants not infused by the cut date",
    "scheduled visits owing the definition's form that are neither done nor missed and whose window is "
    "still open at the cut (an overdue visit counts as a missed assessment)",
    "from the outcomes only: day-0 (pre-dose) assessments, which are the baseline (kept and derived)",
]


def datacut_create(*, actor, study: Study, cut_date: dt.date, label: str = "", channel: str = "web") -> DataCut:
    """Freeze the study's casebook as of ``cut_date``.

    The frames and the audit chain head are read in one REPEATABLE READ, read-only transaction (one
    snapshot: nothing changes half-way through); the cut is written in a second, ordinary one (the
    audit seal trigger must see the latest chain link, which a repeatable-read snapshot would hide).
    """
    from trials.services import clinical_today

    access = selectors.analytics_access(user=actor, study=study)
    _require(access.can_cut, "Your role cannot make data cuts.")
    if not isinstance(cut_date, dt.date) or isinstance(cut_date, dt.datetime):
        raise RuleViolation({"cut_date": "The cut date must be a date."})
    today = clinical_today()
    if cut_date > today:
        raise RuleViolation(
            {
                "cut_date": f"The cut date {cut_date.isoformat()} is in the future: the latest is today, {today.isoformat()}."
            }
        )
    started = selectors.study_start_date(study=study)
    if started is None:
        raise RuleViolation({"cut_date": "The study has not started (no consent form version, nobody screened)."})
    if cut_date < started:
        raise RuleViolation(
            {
                "cut_date": f"The cut date {cut_date.isoformat()} is before the study started "
                f"({started.isoformat()}): choose a date from {started.isoformat()} to {today.isoformat()}."
            }
        )
    # Inside a test's wrapping transaction the snapshot is that transaction's; everywhere else this
    # block opens the transaction, and SET TRANSACTION must be its first statement.
    fresh = not connection.in_atomic_block
    with transaction.atomic(durable=True):
        if fresh:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        definition = selectors.definition_current(study=study)
        if definition is None:
            raise RuleViolation("Set the study's remission definition before making a data cut.")
        head = AuditSeal.objects.order_by("-seq").values_list("seq", "hash").first()
        frames = datacut.extract_frames(
            study_id=study.pk, indication=study.indication, blinded=study.is_blinded, cut_date=cut_date
        )
    public = {name: frame for name, frame in frames.items() if name != datacut.ALLOCATION_FRAME}
    manifest = {
        "study": study.code,
        "indication": study.indication,
        "cut_date": cut_date.isoformat(),
        "blinded": study.is_blinded,
        "follow_up_days": study.follow_up_days,
        "administrative_cutoff": "min(infusion date + follow_up_days, cut date)",
        "extraction_version": datacut.EXTRACTION_VERSION,
        "excluded": EXCLUSION_RULES,
        "definition": {
            "id": definition.pk,
            "version": definition.version,
            "key": definition_of(definition, study.indication).key,
            "rule": definition.rule,
            "parameters": definition.parameters,
            "sap": definition.sap,
        },
        "frames": {name: {"rows": f.rows, "sha256": f.sha256} for name, f in sorted(public.items())},
        # The allocation frame's checksum is kept off the manifest (shown to blinded users, and a
        # hash of a small allocation list could be brute-forced); it is checked on every read.
        "allocation_frame": datacut.ALLOCATION_FRAME in frames,
        "audit_chain": {"seq": head[0], "hash": head[1]} if head else None,
    }
    with transaction.atomic(durable=True):
        cut = DataCut(
            study=study,
            cut_date=cut_date,
            label=label.strip(),
            definition=definition,
            created_by=actor,
            manifest=manifest,
            checksum=datacut.combined_checksum({name: f.sha256 for name, f in public.items()}),
            audit_chain_head=head[1] if head else "",
        )
        cut.full_clean()
        with audit_context(actor=actor, reason=f"data cut as of {cut_date:%Y-%m-%d}", channel=channel):
            cut.save()
        DataCutFrame.objects.bulk_create(
            DataCutFrame(data_cut=cut, name=f.name, rows=f.rows, sha256=f.sha256, content=f.compressed())
            for f in frames.values()
        )
        cut_id = cut.pk
        outbox_add(task=MATERIALISE_TASK, args=[cut_id], data_cut_id=cut_id)
        anchor_on_commit(reason=f"data cut #{cut_id} as of {cut_date:%Y-%m-%d}", study=study.code)
    return cut


def datacut_frames(cut: DataCut) -> dict[str, datacut.Frame]:
    """The stored frames of a cut, each checked against its checksum (and the cut's)."""
    frames = {}
    for row in DataCutFrame.objects.filter(data_cut=cut).order_by("name"):
        frame = datacut.Frame.from_compressed(row.name, row.content)
        if frame.sha256 != row.sha256:
            raise AnalysisError(f"Data cut #{cut.pk}: frame {row.name} does not match its checksum.")
        frames[row.name] = frame
    public = {name: f.sha256 for name, f in frames.items() if name != datacut.ALLOCATION_FRAME}
    if datacut.combined_checksum(public) != cut.checksum:
        raise AnalysisError(f"Data cut #{cut.pk}: the frames do not match the cut's checksum.")
    return frames


# ---------------------------------------------------------------------------------------------
# Requesting an analysis
# ---------------------------------------------------------------------------------------------


def analysis_spec_for(*, actor, data_cut: DataCut, spec: Mapping[str, Any]) -> AnalysisSpec:
    """Validate ``spec`` for ``actor``: arm grouping only for an unblinded role in a blinded study."""
    access = selectors.analytics_access(user=actor, study=data_cut.study)
    _require(access.can_request, "Your role cannot request analyses.")
    parsed = spec_parse(spec)
    if parsed.grouping == "arm":
        if not data_cut.study.is_blinded:
            raise RuleViolation({"grouping": "This study is not randomized: there is no arm to group by."})
        # Same answer whatever the allocation: blinded roles get pooled or by-cohort results only.
        _require(access.sees_arm, "Blinded roles see pooled or by-cohort results only.")
    return parsed


@transaction.atomic(durable=True)
def analysis_request(*, actor, data_cut: DataCut, spec: Mapping[str, Any], channel: str = "web") -> AnalysisJob:
    """The job for (data cut, spec). Idempotent: the same request returns the same job, and a job
    that has run returns its stored result without running again. A new job (or a failed one asked
    for again) gets an outbox message in the same transaction, published once it commits, so the
    worker always finds the row; a broker that is down delays the run, never the answer."""
    parsed = analysis_spec_for(actor=actor, data_cut=data_cut, spec=spec)
    now = timezone.now()
    job, created = AnalysisJob.objects.get_or_create(
        data_cut=data_cut,
        spec_hash=parsed.hash,
        defaults={"spec": parsed.to_dict(), "requested_by": actor, "queued_at": now},
    )
    if not created:
        job = AnalysisJob.objects.select_for_update().get(pk=job.pk)
        if job.status == AnalysisJob.Status.SUCCEEDED:
            return job
        if job.status == AnalysisJob.Status.FAILED:
            job.status, job.error, job.progress, job.stage = AnalysisJob.Status.QUEUED, "", 0, ""
        elif job.status == AnalysisJob.Status.RUNNING:
            return job  # a silent worker is beat's business (analytics/job_recovery.py)
        elif job.queued_at > now - QUEUED_TOO_LONG or job.outbox.filter(sent_at=None).exists():
            return job  # queued recently, or still waiting for the broker (the relay will send it)
        job.queued_at = now
        job.save(update_fields=["status", "error", "progress", "stage", "queued_at"])
    logger.info("analysis %s queued (cut %s, via %s)", job.pk, data_cut.pk, channel)
    outbox_add(task=RUN_TASK, args=[job.pk], job_id=job.pk)
    return job


# ---------------------------------------------------------------------------------------------
# Running an analysis (the Celery task's body)
# ---------------------------------------------------------------------------------------------


def _claim(job_id: int, task_id: str) -> bool:
    """Compare-and-set: take a queued job, a job this same message held before (a redelivery after
    the worker died, or a retry), or a running job whose worker stopped reporting."""
    now = timezone.now()
    claimable = (
        Q(status=AnalysisJob.Status.QUEUED)
        | Q(status=AnalysisJob.Status.RUNNING, task_id=task_id)
        | Q(status=AnalysisJob.Status.RUNNING, heartbeat_at__lt=stale_bound(now))
    )
    changed = (
        AnalysisJob.objects.filter(claimable, pk=job_id)
        .exclude(result__isnull=False)
        .update(
            status=AnalysisJob.Status.RUNNING,
            attempts=F("attempts") + 1,
            task_id=task_id,
            started_at=now,
            heartbeat_at=now,
            progress=1,
            stage="claimed",
            error="",
        )
    )
    return changed == 1


class _Progress:
    """Reports progress on the job row (autocommit, so pages see it at once) and notices a lost claim."""

    def __init__(self, job_id: int, task_id: str) -> None:
        self.job_id, self.task_id = job_id, task_id

    def __call__(self, percent: int, stage: str) -> None:
        changed = AnalysisJob.objects.filter(
            pk=self.job_id, status=AnalysisJob.Status.RUNNING, task_id=self.task_id
        ).update(progress=percent, stage=stage[:100], heartbeat_at=timezone.now())
        if changed != 1:
            raise ClaimLost(f"analysis {self.job_id} was taken over by another run")


def analysis_run(*, job_id: int, task_id: str) -> str:
    """Run a claimed job to its stored result. Transient errors propagate (the task retries them);
    any other failure is recorded on the job with its message."""
    if not _claim(job_id, task_id):
        job = AnalysisJob.objects.filter(pk=job_id).only("status").first()
        state = job.status if job else "missing"
        logger.info("analysis %s not claimed by %s: it is %s", job_id, task_id, state)
        return f"skipped ({state})"
    progress = _Progress(job_id, task_id)
    try:
        job = AnalysisJob.objects.select_related("data_cut__study", "data_cut__definition").get(pk=job_id)
        with Heartbeat(job_id=job_id, task_id=task_id):
            outcome = analysis_compute(job=job, progress=progress)
        _store(job, outcome)
    except ClaimLost:
        logger.warning("analysis %s: claim lost, run %s stopped", job_id, task_id)
        return "claim lost"
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        logger.exception("analysis %s failed", job_id)
        message = str(exc) if isinstance(exc, AnalysisError) else f"{type(exc).__name__}: {exc}"
        analysis_fail(job_id=job_id, message=message)
        return "failed"
    return "succeeded"


def analysis_fail(*, job_id: int, message: str) -> None:
    """Record a failure (a computation error, or transient errors past the retry limit)."""
    now = timezone.now()
    AnalysisJob.objects.filter(pk=job_id).exclude(status=AnalysisJob.Status.SUCCEEDED).update(
        status=AnalysisJob.Status.FAILED, error=message[:2000], finished_at=now, heartbeat_at=now
    )


def _derive_kwargs(cut: DataCut, *, endpoint: str) -> dict[str, Any]:
    return {
        "indication": cut.study.indication,
        "definition": definition_of(cut.definition, cut.study.indication),
        "sap": datacut.sap_options(cut.definition.sap),
        "follow_up_days": cut.manifest.get("follow_up_days", cut.study.follow_up_days),
        "cut_date": cut.cut_date,
        "endpoint": endpoint,
    }


_ASSESSMENT_DB_COLUMNS = (
    "data_cut_id",
    "definition_id",
    "participant_id",
    "visit_id",
    "assessment_id",
    "visit_date",
    "study_day",
    "adequate",
    "in_remission",
    "derived",
    "note",
)


_COPY_SLICE = 100_000


def remission_assessments_materialise(*, cut_id: int) -> int:
    """Store the cut's remission status per assessment (``RemissionAssessment``: the per-participant
    timeline, and each derived value's link to its inputs). Idempotent: a cut is stored once, under an
    advisory lock, in one COPY. The analyses do not wait for it: they derive from the frames."""
    cut = DataCut.objects.select_related("study", "definition").get(pk=cut_id)
    if RemissionAssessment.objects.filter(data_cut=cut).exists():
        return 0
    derived = datacut.derive(
        datacut_frames(cut), with_assessments=True, **_derive_kwargs(cut, endpoint="time_to_relapse")
    )
    rows = derived.assessments_table
    rows.insert(0, "definition_id", cut.definition_id)
    rows.insert(0, "data_cut_id", cut.pk)
    table = RemissionAssessment._meta.db_table
    columns = ", ".join(_ASSESSMENT_DB_COLUMNS)
    statement = f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, FORCE_NOT_NULL (note))"  # noqa: S608
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_DERIVATIONS_LOCK_NAMESPACE, cut.pk])
        if RemissionAssessment.objects.filter(data_cut=cut).exists():
            return 0
        with cursor.cursor.copy(statement) as copy:
            # In slices, so the CSV text of a million rows is never held at once.
            for start in range(0, len(rows), _COPY_SLICE):
                part = rows.iloc[start : start + _COPY_SLICE]
                copy.write(part.to_csv(index=False, header=False, lineterminator="\n", na_rep="").encode())
    return len(rows)


def analysis_compute(*, job: AnalysisJob, progress=None) -> dict[str, Any]:
    """Everything a job stores, computed from the job's data cut and spec (pure with respect to
    them: running it again gives the same checksum and the same numbers)."""
    report = progress or (lambda _percent, _stage: None)
    started = time.perf_counter()
    spec = spec_parse(job.spec)
    cut = job.data_cut
    report(5, "loading the data cut")
    frames = datacut_frames(cut)
    report(10, "deriving remission per assessment")
    derived = datacut.derive(frames, **_derive_kwargs(cut, endpoint=spec.endpoint))
    report(40, "building the analysis frame")
    allocation = None
    if spec.grouping == "arm":
        if datacut.ALLOCATION_FRAME not in frames:
            raise AnalysisError("This data cut holds no randomized allocation.")
        allocation = {int(r["participant_id"]): r["arm"] for r in frames[datacut.ALLOCATION_FRAME].records()}
    frame = datacut.analysis_frame(derived.table, grouping=spec.grouping, allocation=allocation)
    input_checksum = datacut.frame_checksum(frame)
    stages = iter(range(50, 90, 8))

    def on_stage(name: str) -> None:
        report(next(stages, 88), name)

    try:
        numbers = compute.analysis_numbers(
            frame,
            ci_transform=spec.ci_transform,
            horizon_days=None if spec.horizon_days is None else float(spec.horizon_days),
            axis_days=float(cut.manifest.get("follow_up_days", cut.study.follow_up_days)),
            alpha=spec.alpha,
            seed=spec.seed,
            on_stage=on_stage,
        )
    except ValueError as exc:
        raise AnalysisError(str(exc)) from None
    numbers["input"] = {
        "data_cut": cut.pk,
        "cut_date": cut.cut_date.isoformat(),
        "data_cut_checksum": cut.checksum,
        "audit_chain_head": cut.audit_chain_head,
        "definition": cut.manifest["definition"]["key"],
        "endpoint": spec.endpoint,
        "paramcd": datacut.ENDPOINTS[spec.endpoint],
        "spec": spec.to_dict(),
        "participants_in_cut": frames["participants"].rows,
        "participants_analysed": len(frame),
        "participants_excluded_by_sap": derived.excluded,
        "assessments": derived.assessments,
        "adequate_assessments": derived.adequate,
        "input_checksum": input_checksum,
    }
    report(90, "drawing the curves")
    title = f"{cut.study.code.upper()}: {ENDPOINT_LABELS[spec.endpoint]} (cut {cut.cut_date:%Y-%m-%d})"
    code = cut.study.code.upper()
    km_svg, km_png = plots.km_plot(frame, numbers, title=title)
    cif_svg, cif_png = plots.cif_plot(frame, numbers, title=f"{code}: cumulative incidence of relapse")
    pir_svg, pir_png = plots.pir_plot(numbers, title=f"{code}: probability of being in remission")
    return {
        "input_checksum": input_checksum,
        "data_cut_checksum": cut.checksum,
        "library_versions": numbers["versions"],
        "numbers": numbers,
        "km_svg": km_svg,
        "km_png": km_png,
        "cif_svg": cif_svg,
        "cif_png": cif_png,
        "pir_svg": pir_svg,
        "pir_png": pir_png,
        "compute_seconds": time.perf_counter() - started,
    }


def _store(job: AnalysisJob, outcome: Mapping[str, Any]) -> None:
    """Store the result and mark success in one transaction. The one-to-one job → result key makes
    a second run (a redelivered message racing the first) keep the first result."""
    now = timezone.now()
    try:
        with transaction.atomic(durable=True):
            AnalysisResult.objects.create(job=job, **outcome)
            AnalysisJob.objects.filter(pk=job.pk, status=AnalysisJob.Status.RUNNING).update(
                status=AnalysisJob.Status.SUCCEEDED, progress=100, stage="done", finished_at=now, heartbeat_at=now
            )
    except IntegrityError:
        if not AnalysisResult.objects.filter(job=job).exists():
            raise
        logger.info("analysis %s: result already stored by another run", job.pk)
