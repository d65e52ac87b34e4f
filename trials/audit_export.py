"""A study's whole audit trail as CSV, every audited table of every app: one line per event (who,
when, why, which record of which subject) with ``old`` and ``new`` as JSON objects of the fields the
event changed (``{"actual_date": "2025-02-10"}`` -> ``{"actual_date": "2025-02-11"}``); a record's
creation has its filled fields in ``new`` and no ``old``.

One line per event, not per field: the trail page groups them the same way, and a line per field
repeats who-when-why for every field, which makes the file several times larger than the events
themselves and alone keeps the export far above the cost of reading them.

PostgreSQL writes the CSV itself (``COPY (...) TO STDOUT``): per event table, one query compares each
event with the one before it for the same record (``lag`` over the record's events, in record order)
and lists what changed; this process only forwards blocks of about ``BLOCK_BYTES``. Memory stays at
one block whatever the study's size, and the time stays within three times a plain ``COPY`` of the
same events (``benchmarks/audit_export.py``). All tables are read in one REPEATABLE READ snapshot, so
the export is consistent across tables even while data entry goes on.

Which events belong to the study comes from ``trials.audit.scope_filter``: the chain of foreign keys
from each audited model to the study (an expedited report: case -> adverse event -> participant ->
study). Blinding applies: the allocation list is left out for blinded users (docs/reliability.md #23).
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
    "old",
    "new",
]
BLOCK_BYTES = 256 * 1024


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


def scope_condition(event_model, filters: dict, cursor) -> str:
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


def _json(field, expression: str) -> str:
    """``expression`` (a value of ``field``) as JSON text. Numbers, booleans and dates are written
    by their text form, which is already valid JSON (or needs only quotes): building JSON through
    ``to_json`` costs several times more and would dominate the export."""
    target = field.target_field if field.is_relation else field
    if isinstance(target, models.IntegerField | models.DecimalField | models.BooleanField):
        text = f"{expression}::text"
    elif isinstance(target, models.DateField) and not isinstance(target, models.DateTimeField):
        text = f"'\"' || {expression}::text || '\"'"
    else:
        text = f"to_json({expression})::text"
    return f"coalesce({text}, 'null')" if field.null else text


def _has_value(field, expression: str) -> str | None:
    """SQL true when the field holds a value worth listing; None when it always does."""
    if isinstance(field, ArrayField):
        return f"coalesce(cardinality({expression}), 0) > 0"
    if isinstance(field, models.CharField | models.TextField):
        return f"coalesce({expression}, '') <> ''"
    return f"{expression} IS NOT NULL" if field.null else None


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

    def changed(side: str) -> str:
        return ", ".join(
            f"""CASE WHEN ev.o{i} IS DISTINCT FROM ev.n{i} THEN '"{f.name}": ' || {_json(f, f"ev.{side}{i}")} END"""
            for i, f in enumerate(fields)
        )

    def recorded() -> str:
        """On a record's creation, the fields that have a value (as the trail page shows it); on the
        first event of a record older than the audit, every field."""
        items = []
        for i, f in enumerate(fields):
            item = f"""'"{f.name}": ' || {_json(f, f"ev.n{i}")}"""
            condition = _has_value(f, f"ev.n{i}")
            items.append(item if condition is None else f"CASE WHEN NOT ev.created OR {condition} THEN {item} END")
        return ", ".join(items)

    old = f"CASE WHEN ev.prev_id IS NOT NULL THEN '{{' || concat_ws(', ', {changed('o')}) || '}}' END"
    new = (
        f"'{{' || CASE WHEN ev.prev_id IS NULL THEN concat_ws(', ', {recorded()}) "
        f"ELSE concat_ws(', ', {changed('n')}) END || '}}'"
    )
    return f"""
        SELECT ev.pgh_created_at, {sql.Literal(label).as_string(cursor.connection)},
               ev.pgh_obj_id, {sql_neutralised("ev.subject")}, ev.pgh_label,
               {sql_neutralised("ev.username")}, {sql_neutralised("ev.user_id")}, {sql_neutralised("ev.reason")},
               {sql_neutralised("ev.channel")}, {old}, {new}
        FROM (
            SELECT e.pgh_id, e.pgh_created_at, e.pgh_label, e.pgh_obj_id,
                   lag(e.pgh_id) OVER w AS prev_id, e.pgh_label = 'insert' AS created,
                   {subject} AS subject,
                   c.metadata ->> 'username' AS username,
                   c.metadata ->> 'user' AS user_id,
                   c.metadata ->> 'reason' AS reason,
                   coalesce(c.metadata ->> 'channel', CASE WHEN c.metadata ? 'url' THEN 'web' ELSE '' END) AS channel,
                   {snapshot}
            FROM {quote(event_model._meta.db_table)} AS e
            LEFT JOIN pghistory_context AS c ON c.id = e.pgh_context_id
            {subject_join}
            WHERE {scope_condition(event_model, filters, cursor)}
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
        # Compiling these wide expressions costs more than it saves on a table's worth of rows; and a
        # table's events sort by record in memory (bounded; beyond it PostgreSQL spills to disk).
        cursor.execute("SET LOCAL jit TO off")
        cursor.execute("SET LOCAL work_mem TO '64MB'")
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
