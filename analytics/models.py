"""Persistent side of the durability analyses (issue 5): the study's versioned remission definition,
data cuts (a frozen, checksummed extraction of the casebook), analysis jobs keyed on
(data cut, specification hash), their stored results, and the per-assessment remission derivations.

What is audited and what is not:

* ``RemissionDefinitionConfig`` and ``DataCut`` are audited (pghistory): a definition is an SAP
  decision and a cut is the input of every reported number, so who made them and when must be in the
  audit trail. Both are insert-only: a new definition is a new version, a cut never changes.
* ``AnalysisJob`` is operational state (status, progress, heartbeats) updated many times per run;
  ``AnalysisResult``, ``DataCutFrame`` and ``RemissionAssessment`` are derived, insert-once rows that
  can be recomputed from the cut. None of them is audited: the audit trail would copy megabytes of
  plots and frames for no information. ``TaskOutbox`` rows are operational too: the Celery messages
  still to publish (analytics/outbox.py).
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from trials.audit import audited


@audited
class RemissionDefinitionConfig(models.Model):
    """One version of a study's remission definition and the SAP options of its durability endpoints.

    ``rule`` and ``parameters`` build an :class:`analytics.derivations.RemissionDefinition`; ``sap``
    holds the episode and censoring options (:func:`analytics.datacut.sap_options` documents and
    validates the keys). A change is a new version; data cuts pin the version they were derived with.
    """

    study = models.ForeignKey("trials.Study", on_delete=models.PROTECT, related_name="remission_definitions")
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    rule = models.CharField(max_length=40)
    parameters = models.JSONField(default=dict, blank=True)
    sap = models.JSONField(default=dict, blank=True)
    reason = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["study", "version"], name="remission_definition_version_unique"),
            models.CheckConstraint(condition=Q(version__gte=1), name="remission_definition_version_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


@audited
class DataCut(models.Model):
    """A frozen extraction of one study's casebook as of ``cut_date`` (an explicit date, never "today").

    The extracted frames are stored with the cut (``DataCutFrame``) so that every analysis of the cut
    reads exactly the same rows, whatever happens to the live tables afterwards. ``manifest`` records the
    row counts and SHA-256 of each frame, the definition version, the extraction rules and the head of
    the audit hash chain at extraction time; ``checksum`` is the SHA-256 over the frames' checksums.
    """

    study = models.ForeignKey("trials.Study", on_delete=models.PROTECT, related_name="data_cuts")
    cut_date = models.DateField()
    label = models.CharField(max_length=100, blank=True)
    definition = models.ForeignKey(RemissionDefinitionConfig, on_delete=models.PROTECT, related_name="data_cuts")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    manifest = models.JSONField()
    checksum = models.CharField(max_length=64)
    audit_chain_head = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["study", "-created_at", "-pk"]

    def __str__(self) -> str:
        label = f" {self.label}" if self.label else ""
        return f"{self.study.code} cut {self.cut_date:%Y-%m-%d}{label} (#{self.pk})"


class DataCutFrame(models.Model):
    """One extracted frame of a data cut: the canonical CSV as PostgreSQL wrote it (sorted rows,
    ISO dates, numerics as stored), gzip-compressed. ``sha256`` is over the uncompressed CSV."""

    data_cut = models.ForeignKey(DataCut, on_delete=models.PROTECT, related_name="frames")
    name = models.CharField(max_length=30)
    rows = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    content = models.BinaryField()

    class Meta:
        ordering = ["data_cut", "name"]
        constraints = [models.UniqueConstraint(fields=["data_cut", "name"], name="data_cut_frame_once_per_name")]

    def __str__(self) -> str:
        return f"{self.data_cut_id}:{self.name} ({self.rows} rows)"


class AnalysisJob(models.Model):
    """A requested analysis of a data cut. The pair (data cut, spec hash) is unique: asking twice for
    the same analysis of the same cut gives the same job and, once it has run, the same result."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    data_cut = models.ForeignKey(DataCut, on_delete=models.PROTECT, related_name="jobs")
    spec = models.JSONField()
    spec_hash = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    stage = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # The Celery task id holding the claim: a redelivery of the same message may take the job back.
    task_id = models.CharField(max_length=64, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["data_cut", "spec_hash"], name="analysis_job_once_per_cut_and_spec"),
            models.CheckConstraint(condition=Q(progress__lte=100), name="analysis_job_progress_at_most_100"),
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"analysis #{self.pk} of cut #{self.data_cut_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def silent_for(self) -> dt.timedelta | None:
        """How long a running job has reported nothing (its last heartbeat); ``None`` unless running."""
        if self.status != self.Status.RUNNING or self.heartbeat_at is None:
            return None
        return max(timezone.now() - self.heartbeat_at, dt.timedelta(0))

    @property
    def is_stalled(self) -> bool:
        """A running job whose worker has missed two heartbeats: it has probably stopped (the page says
        so; ``analytics.job_recovery`` re-queues it once it is silent for the stale bound)."""
        silent = self.silent_for
        return silent is not None and silent.total_seconds() > 2 * settings.TOLERANCE_JOB_HEARTBEAT_SECONDS


class AnalysisResult(models.Model):
    """The stored outcome of a job: numbers (JSON), plots, and what is needed to trace them (the
    checksum of the participant-level input frame, the cut's checksum, library versions)."""

    job = models.OneToOneField(AnalysisJob, on_delete=models.PROTECT, related_name="result")
    input_checksum = models.CharField(max_length=64)
    data_cut_checksum = models.CharField(max_length=64)
    library_versions = models.JSONField()
    numbers = models.JSONField()
    km_svg = models.TextField()
    km_png = models.BinaryField()
    cif_svg = models.TextField()
    cif_png = models.BinaryField()
    pir_svg = models.TextField(blank=True, default="")
    pir_png = models.BinaryField(default=b"")
    compute_seconds = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"result of analysis #{self.job_id}"


class RemissionAssessment(models.Model):
    """Remission status derived for one visit of a data cut with the cut's definition version.

    ``visit`` and ``assessment`` link the derivation to its inputs (the assessment is empty for a
    missed or overdue visit); ``derived`` holds the scores, each with its unit, and the comparison made.
    A visit that cannot be evaluated has ``adequate=False`` and says why in ``note``.

    A big cut writes a million of these in one COPY, so the links to the casebook carry no database
    constraint or index of their own (each would cost a lookup or an index update per row): the ids come
    from the cut's frozen frames, and clinical rows are voided, never deleted, so they cannot dangle.
    The cut itself is a real foreign key, and (cut, visit) is unique.
    """

    data_cut = models.ForeignKey(DataCut, on_delete=models.PROTECT, related_name="remission_assessments")
    definition = models.ForeignKey(
        RemissionDefinitionConfig, on_delete=models.PROTECT, related_name="+", db_constraint=False, db_index=False
    )
    participant = models.ForeignKey(
        "trials.Participant", on_delete=models.PROTECT, related_name="+", db_constraint=False, db_index=False
    )
    visit = models.ForeignKey(
        "trials.Visit", on_delete=models.PROTECT, related_name="+", db_constraint=False, db_index=False
    )
    assessment = models.ForeignKey(
        "trials.DiseaseAssessment",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    visit_date = models.DateField()
    study_day = models.IntegerField()
    adequate = models.BooleanField()
    in_remission = models.BooleanField(null=True)
    derived = models.JSONField(default=dict)
    note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["data_cut", "participant", "visit_date", "visit"]
        constraints = [
            models.UniqueConstraint(fields=["data_cut", "visit"], name="remission_assessment_once_per_cut_visit"),
            models.CheckConstraint(
                condition=Q(adequate=False) | Q(in_remission__isnull=False),
                name="remission_assessment_adequate_has_status",
            ),
        ]
        indexes = [models.Index(fields=["data_cut", "participant", "visit_date"])]

    def __str__(self) -> str:
        return f"cut {self.data_cut_id} visit {self.visit_id}: {self.in_remission}"


class TaskOutbox(models.Model):
    """A Celery message to publish, written in the same transaction as the row whose work it starts
    (docs/reliability.md #35). It is published after commit; while the broker is unreachable the row
    stays unsent and the relay (Celery beat) publishes it once the broker is back. Each row names the
    job or the data cut it is about, so pages can say "waiting for the task queue".
    """

    task = models.CharField(max_length=100, help_text="The registered Celery task name.")
    args = models.JSONField(default=list, help_text="Positional arguments: ids only (docs/style.md §8).")
    job = models.ForeignKey(AnalysisJob, null=True, blank=True, on_delete=models.PROTECT, related_name="outbox")
    data_cut = models.ForeignKey(DataCut, null=True, blank=True, on_delete=models.PROTECT, related_name="outbox")
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)
    # The Celery id of the published message, to trace a run back to its request.
    message_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # The claim of the current attempt (compare-and-set): another sender leaves the row alone until the
    # attempt has had time to finish or fail.
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(job__isnull=False) | Q(data_cut__isnull=False), name="task_outbox_names_its_subject"
            ),
        ]
        indexes = [
            models.Index(fields=["created_at"], condition=Q(sent_at__isnull=True), name="task_outbox_unsent"),
        ]

    def __str__(self) -> str:
        state = f"sent {self.sent_at:%Y-%m-%d %H:%M:%S}" if self.sent_at else "unsent"
        return f"{self.task}{tuple(self.args)} ({state})"
