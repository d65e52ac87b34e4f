"""Business rules and writes for the casebook, split by feature; forms and the API call these functions,
and nothing else writes clinical rows.

Each function owns its transaction (``atomic(durable=True)``: it fails loudly if nested), checks
every rule before writing and, for what the user can correct, collects every problem first and
raises one ``RuleViolation`` keyed by field (``trials.rules.Problems``), so a refused call saves
nothing and the form shows all its errors at once. Every write happens inside ``audit_context`` so
that its audit event carries the acting user, the channel and, for edits, the reason for change.

The shared guards (locks, roles, reasons, versions, dates) are public in ``trials.guards``; the
names below are the services' public surface.
"""

from trials.errors import ConflictError, LockedError, RuleViolation
from trials.guards import (
    check_password,
    clinical_today,
    ensure_writable,
    first_consent,
    first_infusion,
    record_update,
    require_role,
    save_validated,
)
from trials.rules import dose_deviation_pct
from trials.services.assessments import (
    ALL_ASSESSMENT_FIELDS,
    MMTT_MINUTES,
    RANGES,
    REQUIRED_FIELDS,
    assessment_record,
    mmtt_record,
    mri_record,
    relapse_record,
)
from trials.services.disposition import disposition_record
from trials.services.enrolment import participant_enrol
from trials.services.infusion import dose_per_kg, infusion_correct, infusion_record
from trials.services.integrity import (
    casebook_set_locked,
    participant_unblind,
    record_void,
    study_set_locked,
)
from trials.services.rescue_insulin import insulin_dose_record, rescue_therapy_record
from trials.services.screening import (
    consent_record,
    eligibility_record,
    eligibility_unmet,
    participant_screen,
    participant_screen_fail,
    reconsent_due,
)
from trials.services.visits import visit_add_unscheduled, visit_mark_missed, visit_record
from trials.signatures import record_sign, signature_state

# Former private names, for modules that still import them from here (use ``trials.guards``).
_check_password = check_password
_ensure_writable = ensure_writable
_first_consent = first_consent
_first_infusion = first_infusion
_require_role = require_role
_save = save_validated

__all__ = [
    "ConflictError",
    "LockedError",
    "RuleViolation",
    "ALL_ASSESSMENT_FIELDS",
    "MMTT_MINUTES",
    "RANGES",
    "REQUIRED_FIELDS",
    "assessment_record",
    "casebook_set_locked",
    "clinical_today",
    "consent_record",
    "disposition_record",
    "dose_deviation_pct",
    "dose_per_kg",
    "eligibility_record",
    "eligibility_unmet",
    "infusion_correct",
    "infusion_record",
    "insulin_dose_record",
    "mmtt_record",
    "mri_record",
    "participant_enrol",
    "participant_screen",
    "participant_screen_fail",
    "participant_unblind",
    "reconsent_due",
    "record_sign",
    "record_update",
    "record_void",
    "relapse_record",
    "rescue_therapy_record",
    "signature_state",
    "study_set_locked",
    "visit_add_unscheduled",
    "visit_mark_missed",
    "visit_record",
]
