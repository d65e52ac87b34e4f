"""A study's whole audit trail as CSV, every audited table of every app: one line per event (who,
when, why, which record of which subject) with the fields it changed as a JSON object
``{"field": [old, new], ...}`` (on a record's creation, its filled fields with ``null`` as old).

One line per event, not per field: that is how the trail page groups them too, and a line per field
repeats who-when-why for every field and makes the file several times larger than the events
themselves, which alone keeps such an export far above the cost of reading the events.

PostgreSQL writes the CSV itself (``COPY (...) TO STDOUT``): per event table, one query compares each
event with the one before it for the same record (``lag`` over the record's events, in record order)
and lists what changed; this process only forwards blocks of about ``BLOCK_BYTES``. Memory stays at
one block whatever the study's size, and the time stays within a small factor of a plain ``COPY`` of
the same events (``benchmarks/audit_export.py``). All tables are read in one REPEATABLE READ
snapshot, so the export is consistent across tables even while data entry goes on.

Which events belong to the study comes from ``trials.audit.scope_filter``: the chain of foreign keys
from each audited model to the study (an expedited report: case -> adverse event -> participant ->
study). Blinding applies: the allocation list is left out for blinded users (docs/reliability.md §3).
Every text cell is neutralised against formula injection in SQL (``trials.csv_export``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from itertools import chain

from django.contrib.postgres.fields import ArrayField
from django.db import connections, models, transaction
from psycopg import ClientCursor, sql

from trials.audit import audit_fields, path_to, scoped_event_models
from trials.csv_export import csv_text, sql_neutralised

COLUMNS = [
    "at",
    "model",
    "object_id",
    "subject",
    "action",
    "user",
    "user_id",
    "reason",
    "channel",
    "changes",
]
BLOCK_BYTES = 256 * 1024
_ISO_UTC = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


def _compiled(queryset, cursor) -> str:
    """The SQL of ``queryset`` with its parameters inlined (``COPY`` takes no bind parameters)."""
    query, params = queryset.query.sql_with_params()
    return ClientCursor(cursor.connection).mogrify(query, params)


def _subject_join(event_model, study, cursor) -> tuple[str, str]:
    """(join clause, subject expression): the participant's subject code for records of a casebook."""
    from trials.models import Participant

    tracked = event_model.pgh_tracked_model
    if tracked is Participant:
        return "", "e.subject_code"
    path = path_to(tracked, Participant)
    if not path:
        return "", "NULL"
    first, rest = path[0], path[1:]
    to_participant = "__".join(f.name for f in rest)
    code, study_id = (
        (f"{to_participant}__subject_code", f"{to_participant}__study_id") if rest else ("subject_code", "study_id")
    )
    mapping = first.related_model._default_manager.order_by().filter(**{study_id: study.pk}).values_list("pk", code)
    join = f"LEFT JOIN ({_compiled(mapping, cursor)}) AS s (id, subject) ON s.id = e.{first.column}"
    return join, "s.subject"


def _where(event_model, filters: dict, cursor) -> str:
    """``scope_filter``'s lookups (``column`` = id, or ``column__in`` = a subquery) as SQL on ``e``."""
    by_attname = {f.attname: f for f in event_model._meta.concrete_fields}
    conditions = []
    for lookup, value in filters.items():
        name, _, operator = lookup.partition("__")
        column = sql.Identifier(by_attname[name].column)
        column_sql = f"e.{column.as_string(cursor.connection)}"
        if operator == "in":
            conditions.append(f"{column_sql} IN ({_compiled(value.order_by(), cursor)})")
        else:
            conditions.append(f"{column_sql} = {int(value)}")
    return " AND ".join(conditions)


def _event_table_query(event_model, filters: dict, study, cursor) -> str:
    """The export lines of one event table, record by record and each record's events in order, as
    a SELECT with literals only."""
    fields = audit_fields(event_model)
    label = event_model.pgh_tracked_model._meta.label_lower
    subject_join, subject = _subject_join(event_model, study, cursor)

    def quote(name: str) -> str:
        return sql.Identifier(name).as_string(cursor.connection)

    snapshot = ",\n".join(
        f"e.{quote(f.column)} AS n{i}, lag(e.{quote(f.column)}) OVER w AS o{i}" for i, f in enumerate(fields)
    )

    def has_value(i: int, f) -> str:
        if isinstance(f, ArrayField):
            return f"coalesce(cardinality(ev.n{i}), 0) > 0"
        if isinstance(f, models.CharField | models.TextField):
            return f"coalesce(ev.n{i}, '') <> ''"
        return f"ev.n{i} IS NOT NULL"

    # A field is listed with [old, new] when it changed; on the record's first event when it has a
    # value (or always, for a record whose first event is not its creation: it predates the audit).
    changed = ", ".join(
        f"""CASE WHEN ev.prev_id IS NULL
                 THEN CASE WHEN ev.pgh_label <> 'insert' OR {has_value(i, f)}
                           THEN '"{f.name}": [null, ' || coalesce(to_json(ev.n{i})::text, 'null') || ']' END
                 WHEN ev.o{i} IS DISTINCT FROM ev.n{i}
                 THEN '"{f.name}": [' || coalesce(to_json(ev.o{i})::text, 'null') || ', '
                      || coalesce(to_json(ev.n{i})::text, 'null') || ']' END"""
        for i, f in enumerate(fields)
    )
    return f"""
        SELECT to_char(ev.pgh_created_at, '{_ISO_UTC}'), {sql.Literal(label).as_string(cursor.connection)},
               ev.pgh_obj_id, {sql_neutralised("ev.subject")}, ev.pgh_label,
               {sql_neutralised("ev.username")}, ev.user_id, {sql_neutralised("ev.reason")},
               {sql_neutralised("ev.channel")}, '{{' || concat_ws(', ', {changed}) || '}}'
        FROM (
            SELECT e.pgh_id, e.pgh_created_at, e.pgh_label, e.pgh_obj_id,
                   lag(e.pgh_id) OVER w AS prev_id,
                   {subject} AS subject,
                   c.metadata ->> 'username' AS username,
                   c.metadata ->> 'user' AS user_id,
                   c.metadata ->> 'reason' AS reason,
                   coalesce(c.metadata ->> 'channel', CASE WHEN c.metadata ? 'url' THEN 'web' ELSE '' END) AS channel,
                   {snapshot}
            FROM {quote(event_model._meta.db_table)} AS e
            LEFT JOIN pghistory_context AS c ON c.id = e.pgh_context_id
            {subject_join}
            WHERE {_where(event_model, filters, cursor)}
            WINDOW w AS (PARTITION BY e.pgh_obj_id ORDER BY e.pgh_id)
        ) AS ev
        ORDER BY ev.pgh_obj_id, ev.pgh_id
    """  # noqa: S608 - identifiers quoted, values inlined by psycopg


def study_audit_csv(study, *, unblinded: bool, using: str = "default") -> Iterator[bytes]:
    """The CSV of ``study``'s audit trail in blocks of about ``BLOCK_BYTES`` (UTF-8).

    Holds one read-only transaction open while the blocks are consumed; when it starts outside any
    transaction it is REPEATABLE READ, so every table is read from the same snapshot."""
    yield csv_text(COLUMNS, []).encode()
    connection = connections[using]
    outermost = not connection.in_atomic_block
    with transaction.atomic(using=using), connection.cursor() as wrapper:
        cursor = wrapper.cursor
        if outermost:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # Canonical text for dates and times, whatever the server's or the session's defaults.
        cursor.execute("SET LOCAL DateStyle TO 'ISO, YMD'")
        cursor.execute("SET LOCAL TimeZone TO 'UTC'")
        block = bytearray()
        for event_model, filters in scoped_event_models(study, unblinded=unblinded):
            query = _event_table_query(event_model, filters, study, cursor)
            statement = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, FORCE_QUOTE *)"
            with cursor.copy(statement) as copy:
                for data in copy:
                    block += data
                    if len(block) >= BLOCK_BYTES:
                        yield bytes(block)
                        block.clear()
        if block:
            yield bytes(block)


def study_audit_rows(study, *, unblinded: bool) -> Iterator[dict[str, str]]:
    """The export read back as dictionaries, block by block (for checks and tools; the CSV is the
    product). Blocks end at line ends, so each decodes on its own."""
    blocks = study_audit_csv(study, unblinded=unblinded)
    yield from csv.DictReader(chain.from_iterable(io.StringIO(b.decode(), newline="") for b in blocks))
