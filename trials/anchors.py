"""Anchors: the audit chain's head, kept outside the database (docs/decisions/0001-audit-anchoring.md).

The hash chain (trials/dbroles.py) shows that events were altered, removed or re-ordered, but its
formula is public: a database superuser who rewrites an event can recompute every later seal, and
``verify_audit`` alone then finds nothing. So the chain's head (the last link's number and hash) is
written outside the database, where that superuser has no hand:

* one JSON file per anchor, in ``TOLERANCE_AUDIT_ANCHOR_DIR``, created with ``O_EXCL`` (an existing
  file is never overwritten) and read-only;
* signed with HMAC-SHA256 under ``TOLERANCE_AUDIT_ANCHOR_KEY``, a key read from the environment (or a
  key file), never stored in the database, so neither the database's administrators nor anyone who
  can only write to the directory can make an anchor that verifies;
* written every ``TOLERANCE_AUDIT_ANCHOR_MINUTES`` by Celery beat (``trials.audit_anchor``; skipped
  when the chain has not moved), and after every data cut commits.

``anchors_verify`` (``verify_audit --anchors DIR``) checks that each anchored link is still in the
chain with the anchored hash. As each link's hash covers the previous one, a matching link at number N
vouches for links 1..N: any rewrite of the history before the latest anchor is detected, however the
later seals were recomputed. Changes after the latest anchor are caught by the next one.

There is one chain for every study in the database (the seal trigger serialises them all), so one
head covers them all; a data cut's anchor also names its study and cut.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, transaction

logger = logging.getLogger(__name__)

FORMAT = "tolerance-audit-anchor/1"
ALGORITHM = "HMAC-SHA256"
_FIELDS = frozenset({"format", "algorithm", "key_id", "written_at", "reason", "study", "chain", "mac"})


class AnchorError(Exception):
    """Anchoring is not possible: not configured, or the directory is missing or not writable."""


@dataclass(frozen=True)
class ChainHead:
    seq: int  # the last link's number: the count of sealed events (the chain has no gaps)
    hash: str  # "" while the chain is empty


def chain_head(*, using: str = DEFAULT_DB_ALIAS) -> ChainHead:
    """The last committed link. Seals are numbered under one lock held to commit, so every link
    before a committed one is committed too."""
    from trials.models import AuditSeal

    head = AuditSeal.objects.using(using).order_by("-seq").values_list("seq", "hash").first()
    return ChainHead(*head) if head else ChainHead(0, "")


def anchoring_configured() -> bool:
    return bool(settings.TOLERANCE_AUDIT_ANCHOR_DIR and settings.TOLERANCE_AUDIT_ANCHOR_KEY)


def _key(key: str | None) -> bytes:
    key = key if key is not None else settings.TOLERANCE_AUDIT_ANCHOR_KEY
    if not key:
        raise AnchorError("No anchor key: set TOLERANCE_AUDIT_ANCHOR_KEY (or TOLERANCE_AUDIT_ANCHOR_KEY_FILE).")
    return key.encode()


def key_id(key: bytes) -> str:
    """Names the key an anchor was signed with (after a key change, anchors name the old one), without
    revealing anything that helps to forge."""
    return hmac.new(key, b"tolerance audit anchor key id", hashlib.sha256).hexdigest()[:16]


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _mac(key: bytes, body: dict) -> str:
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


def _directory(directory: Path | None) -> Path:
    directory = directory if directory is not None else settings.TOLERANCE_AUDIT_ANCHOR_DIR
    if not directory:
        raise AnchorError("No anchor directory: set TOLERANCE_AUDIT_ANCHOR_DIR.")
    directory = Path(directory)
    # Never created here: a missing mount point must not quietly become a local folder.
    if not directory.is_dir():
        raise AnchorError(f"The anchor directory {directory} does not exist.")
    return directory


def anchor_paths(directory: Path) -> list[Path]:
    """Anchor files, oldest first (their names start with the UTC time they were written)."""
    return sorted(directory.glob("anchor-*.json"))


def _latest_anchor(directory: Path) -> dict | None:
    paths = anchor_paths(directory)
    if not paths:
        return None
    try:
        return json.loads(paths[-1].read_text())
    except (OSError, ValueError):
        return None  # unreadable: write a fresh anchor, verify_audit reports this one


def anchor_write(
    *,
    reason: str,
    study: str = "",
    skip_if_unchanged: bool = False,
    directory: Path | None = None,
    key: str | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> Path | None:
    """Write the chain's current head as a new, signed anchor file and return its path (None when
    ``skip_if_unchanged`` and the latest anchor already holds this head)."""
    directory, secret = _directory(directory), _key(key)
    head = chain_head(using=using)
    if skip_if_unchanged:
        latest = _latest_anchor(directory)
        if latest and latest.get("chain") == {"seq": head.seq, "hash": head.hash}:
            return None
    now = dt.datetime.now(tz=dt.UTC)
    body = {
        "format": FORMAT,
        "algorithm": ALGORITHM,
        "key_id": key_id(secret),
        "written_at": now.isoformat().replace("+00:00", "Z"),
        "reason": reason,
        "study": study or None,
        "chain": {"seq": head.seq, "hash": head.hash},
    }
    document = {**body, "mac": _mac(secret, body)}
    # Time first, so names sort by time; a random suffix, so two writers never pick the same name.
    path = directory / f"anchor-{now:%Y%m%dT%H%M%S%fZ}-{head.seq:012d}-{secrets.token_hex(4)}.json"
    content = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    # O_EXCL: fail rather than overwrite; read-only from the start.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_directory(directory)
    logger.info("Audit chain anchored at link #%s in %s (%s).", head.seq, path.name, reason)
    return path


def _fsync_directory(directory: Path) -> None:
    """Make the new file's name durable too (a crash must not lose an anchor already reported)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def anchor_periodic() -> Path | None:
    """Celery beat's anchor: skipped when anchoring is not configured or the chain has not moved."""
    if not anchoring_configured():
        logger.info("Audit anchoring is not configured (TOLERANCE_AUDIT_ANCHOR_DIR): nothing written.")
        return None
    return anchor_write(reason="periodic", skip_if_unchanged=True)


def anchor_on_commit(*, reason: str, study: str = "") -> None:
    """Anchor the head once the current transaction commits (an anchor of a head that was rolled
    back would later read as tampering). A failure to write is logged, never raised: what it
    follows is committed, and the next periodic anchor covers it."""
    if anchoring_configured():
        transaction.on_commit(lambda: anchor_write(reason=reason, study=study), robust=True)


def anchors_verify(*, directory: Path, key: str | None = None, using: str = DEFAULT_DB_ALIAS) -> tuple[int, list[str]]:
    """Check the chain against every anchor in ``directory``; return (anchors matched, problems).

    A problem is reported for an anchor that is unreadable or whose signature does not verify (altered
    or forged, or signed with another key), for an anchored link that is no longer in the chain
    (history removed), and for one whose hash differs (history up to it rewritten). A directory
    without anchors is a problem too: an empty directory proves nothing."""
    from trials.models import AuditSeal

    secret = _key(key)
    problems: list[str] = []
    anchored: list[tuple[str, str, int, str]] = []  # (file, written_at, seq, hash)
    paths = anchor_paths(Path(directory)) if Path(directory).is_dir() else []
    if not paths:
        return 0, [f"no audit anchors found in {directory}"]
    for path in paths:
        try:
            document = json.loads(path.read_text())
            body = {name: value for name, value in document.items() if name != "mac"}
            seq, head_hash = int(document["chain"]["seq"]), str(document["chain"]["hash"])
            mac, written_at = str(document["mac"]), str(document["written_at"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"anchor {path.name}: unreadable ({exc.__class__.__name__}: {exc})")
            continue
        if set(document) != _FIELDS or document.get("format") != FORMAT:
            problems.append(f"anchor {path.name}: not a {FORMAT} anchor")
            continue
        if not hmac.compare_digest(mac, _mac(secret, body)):
            problems.append(
                f"anchor {path.name}: signature does not match (altered or forged, or signed with another key: "
                f"this key's id is {key_id(secret)}, the anchor names {body.get('key_id')})"
            )
            continue
        anchored.append((path.name, written_at, seq, head_hash))
    seals = dict(
        AuditSeal.objects.using(using)
        .filter(seq__in={seq for _, _, seq, _ in anchored if seq > 0})
        .values_list("seq", "hash")
    )
    matched = 0
    for name, written_at, seq, head_hash in anchored:
        if seq == 0:
            matched += 1  # anchored while the chain was empty: nothing to compare
        elif seq not in seals:
            problems.append(f"anchor {name}: link #{seq}, anchored at {written_at}, is no longer in the chain")
        elif not hmac.compare_digest(seals[seq], head_hash):
            problems.append(
                f"anchor {name}: link #{seq} no longer has the hash anchored at {written_at}: "
                "the history up to it was rewritten"
            )
        else:
            matched += 1
    return matched, problems
