"""Loading the coding dictionaries (docs/domain.md Part A §1.3, §7).

- CTCAE: the shipped v5.0 subset (``safety/data/ctcae_v5_subset.csv``, NCI, public domain, grade texts
  paraphrased, no MedDRA codes), or the full NCI spreadsheet that the user downloads and saves as
  CSV. Columns are found by their header, so the v5.0 and v6.0 spreadsheets both load; the MedDRA
  code column is ignored (MedDRA is licensed). A dash in a grade cell means the grade does not exist.
- MedDRA: the user's own licensed ASCII release (``llt.asc``, ``pt.asc``, ``soc.asc``, ``mdhier.asc``,
  ``$``-separated, one record per line), loaded as one immutable, versioned release. Nothing of
  MedDRA ships with Tolerance; the tests build a small synthetic dictionary in this layout.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.db import transaction

from safety.models import CTCAETerm, MedDRAHierarchy, MedDRALLT, MedDRAPT, MedDRARelease, MedDRASOC

SHIPPED_CTCAE = Path(__file__).resolve().parent / "data" / "ctcae_v5_subset.csv"
SHIPPED_CTCAE_VERSION = "5.0"


class DictionaryError(ValueError):
    """The file is not in the expected layout; nothing was loaded."""


# ---------------------------------------------------------------------------------------------
# CTCAE
# ---------------------------------------------------------------------------------------------

_DASHES = {"-", "–", "—", "‐"}
_COLUMN_PATTERNS = (
    ("term", re.compile(r"^(ctcae( v?\d+(\.\d+)?)? )?term$")),
    ("soc", re.compile(r"^((meddra )?soc|(meddra )?system organ class)$")),
    ("definition", re.compile(r"^(ctcae( v?\d+(\.\d+)?)? )?definition$")),
    ("nci_code", re.compile(r"^(ncit?|nci thesaurus)( concept)? (c-?)?code$")),
    *((f"grade_{n}", re.compile(rf"^grade {n}$")) for n in range(1, 6)),
)


def _header_key(header: str) -> str | None:
    text = " ".join(header.replace("\ufeff", "").replace("_", " ").strip().lower().split())
    for key, pattern in _COLUMN_PATTERNS:
        if pattern.match(text):
            return key
    return None  # e.g. "MedDRA Code", "Navigational Note": not stored


def _cell(value: str | None) -> str:
    text = " ".join((value or "").split())
    return "" if text in _DASHES else text


def read_ctcae(lines: Iterable[str]) -> list[dict[str, str]]:
    """CTCAE rows from CSV lines (``#`` comment lines skipped), keyed by ``CTCAETerm`` field names."""
    reader = csv.reader(line for line in lines if not line.lstrip().startswith("#"))
    try:
        headers = next(reader)
    except StopIteration:
        raise DictionaryError("The file is empty.") from None
    columns = {index: key for index, header in enumerate(headers) if (key := _header_key(header))}
    missing = {"term", "soc"} - set(columns.values())
    if missing or not any(key.startswith("grade_") for key in columns.values()):
        raise DictionaryError(
            f"Columns not found: {', '.join(sorted(missing)) or 'Grade 1-5'}. Expected headers such as "
            "'CTCAE Term', 'MedDRA SOC', 'Grade 1' ... 'Grade 5', 'Definition'."
        )
    rows, seen = [], set()
    for number, record in enumerate(reader, start=2):
        row = {key: _cell(record[index]) if index < len(record) else "" for index, key in columns.items()}
        if not row.get("term"):
            continue
        if not row.get("soc"):
            raise DictionaryError(f"Line {number}: {row['term']!r} has no system organ class.")
        if row["term"] in seen:
            raise DictionaryError(f"Line {number}: {row['term']!r} appears twice.")
        seen.add(row["term"])
        rows.append(row)
    if not rows:
        raise DictionaryError("The file has no terms.")
    return rows


@dataclass(frozen=True)
class LoadResult:
    created: int
    updated: int
    unchanged: int


@transaction.atomic
def ctcae_load(*, rows: list[dict[str, str]], version: str) -> LoadResult:
    """Insert or update the terms of one CTCAE version (the full NCI file replaces the paraphrased
    texts of the shipped subset; terms already used by AEs keep their identity)."""
    version = version.strip()
    if not re.fullmatch(r"\d+\.\d+", version):
        raise DictionaryError(f"{version!r} is not a CTCAE version such as 5.0 or 6.0.")
    existing = {t.term: t for t in CTCAETerm.objects.filter(version=version)}
    fields = ("soc", "definition", "nci_code", "grade_1", "grade_2", "grade_3", "grade_4", "grade_5")
    created, updated, unchanged = [], [], 0
    for row in rows:
        values = {name: row.get(name, "") for name in fields}
        term = existing.get(row["term"])
        if term is None:
            created.append(CTCAETerm(version=version, term=row["term"], **values))
        elif any(getattr(term, name) != value for name, value in values.items()):
            for name, value in values.items():
                setattr(term, name, value)
            updated.append(term)
        else:
            unchanged += 1
    CTCAETerm.objects.bulk_create(created)
    CTCAETerm.objects.bulk_update(updated, fields)
    return LoadResult(len(created), len(updated), unchanged)


def ctcae_load_file(path: Path | str, *, version: str, encoding: str = "utf-8-sig") -> LoadResult:
    with open(path, encoding=encoding, newline="") as handle:
        rows = read_ctcae(handle)
    return ctcae_load(rows=rows, version=version)


def ctcae_load_shipped() -> LoadResult:
    """The shipped v5.0 subset; idempotent."""
    return ctcae_load_file(SHIPPED_CTCAE, version=SHIPPED_CTCAE_VERSION)


# ---------------------------------------------------------------------------------------------
# MedDRA ASCII release
# ---------------------------------------------------------------------------------------------

MEDDRA_FILES = ("soc.asc", "pt.asc", "llt.asc", "mdhier.asc")


def _find(folder: Path, name: str) -> Path | None:
    for candidate in (folder, folder / "MedAscii", folder / "medascii"):
        if candidate.is_dir():
            for path in candidate.iterdir():
                if path.name.lower() == name:
                    return path
    return None


def _records(path: Path, encoding: str, min_fields: int) -> list[list[str]]:
    records = []
    text = path.read_text(encoding=encoding)
    for number, line in enumerate(io.StringIO(text), start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("$")
        if len(fields) < min_fields:
            raise DictionaryError(f"{path.name} line {number}: expected at least {min_fields} $-separated fields.")
        records.append(fields)
    return records


def _code(value: str, where: str) -> int:
    if not value.strip().isdigit():
        raise DictionaryError(f"{where}: {value!r} is not a MedDRA code.")
    return int(value)


@dataclass(frozen=True)
class MedDRALoadResult:
    release: MedDRARelease
    socs: int
    pts: int
    llts: int
    paths: int


def meddra_load(
    folder: Path | str, *, version: str | None = None, language: str | None = None, encoding: str = "utf-8"
) -> MedDRALoadResult:
    """Load one MedDRA ASCII release from ``folder`` (or its ``MedAscii`` subfolder).

    The version and language come from ``meddra_release.asc`` (``version$language$``) unless given.
    A release is loaded once and never changed: loading the same version and language again is
    refused. Every LLT must point to a known PT and every PT to a known SOC, or nothing is loaded.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DictionaryError(f"{folder} is not a folder.")
    paths = {name: _find(folder, name) for name in MEDDRA_FILES}
    missing = [name for name, path in paths.items() if path is None]
    if missing:
        raise DictionaryError(f"Missing MedDRA file(s) in {folder}: {', '.join(missing)}.")
    release_file = _find(folder, "meddra_release.asc")
    if release_file is not None and (version is None or language is None):
        first = _records(release_file, encoding, 2)[0]
        version = version or first[0].strip()
        language = language or first[1].strip()
    if not version:
        raise DictionaryError("The MedDRA version is unknown: no meddra_release.asc; give --meddra-version.")
    language = language or "English"

    socs = {}
    for fields in _records(paths["soc.asc"], encoding, 3):
        code = _code(fields[0], "soc.asc")
        socs[code] = (fields[1].strip(), fields[2].strip())
    pts = {}
    for fields in _records(paths["pt.asc"], encoding, 4):
        code = _code(fields[0], "pt.asc")
        soc = _code(fields[3], f"pt.asc {code}")
        if soc not in socs:
            raise DictionaryError(f"pt.asc: PT {code} points to SOC {soc}, which soc.asc does not have.")
        pts[code] = (fields[1].strip(), soc)
    llts = {}
    for fields in _records(paths["llt.asc"], encoding, 3):
        code = _code(fields[0], "llt.asc")
        pt = _code(fields[2], f"llt.asc {code}")
        if pt not in pts:
            raise DictionaryError(f"llt.asc: LLT {code} points to PT {pt}, which pt.asc does not have.")
        current = fields[9].strip().upper() != "N" if len(fields) > 9 else True
        llts[code] = (fields[1].strip(), pt, current)
    hierarchy = []
    for fields in _records(paths["mdhier.asc"], encoding, 12):
        pt, hlt, hlgt, soc = (_code(fields[i], "mdhier.asc") for i in range(4))
        if pt not in pts or soc not in socs:
            raise DictionaryError(f"mdhier.asc: the path of PT {pt} names an unknown PT or SOC.")
        hierarchy.append((pt, hlt, fields[5].strip(), hlgt, fields[6].strip(), soc, fields[11].strip().upper() == "Y"))

    with transaction.atomic():
        if MedDRARelease.objects.filter(version=version, language=language).exists():
            raise DictionaryError(f"MedDRA {version} {language} is already loaded; releases are never changed.")
        release = MedDRARelease.objects.create(version=version, language=language, source=str(folder))
        soc_rows = MedDRASOC.objects.bulk_create(
            MedDRASOC(release=release, code=code, name=name, abbrev=abbrev) for code, (name, abbrev) in socs.items()
        )
        soc_ids = {row.code: row.pk for row in soc_rows}
        pt_rows = MedDRAPT.objects.bulk_create(
            MedDRAPT(release=release, code=code, name=name, primary_soc_id=soc_ids[soc])
            for code, (name, soc) in pts.items()
        )
        pt_ids = {row.code: row.pk for row in pt_rows}
        MedDRALLT.objects.bulk_create(
            (
                MedDRALLT(release=release, code=code, name=name, pt_id=pt_ids[pt], is_current=current)
                for code, (name, pt, current) in llts.items()
            ),
            batch_size=5000,
        )
        MedDRAHierarchy.objects.bulk_create(
            MedDRAHierarchy(
                release=release,
                pt_id=pt_ids[pt],
                hlt_code=hlt,
                hlt_name=hlt_name,
                hlgt_code=hlgt,
                hlgt_name=hlgt_name,
                soc_id=soc_ids[soc],
                is_primary=primary,
            )
            for pt, hlt, hlt_name, hlgt, hlgt_name, soc, primary in hierarchy
        )
    return MedDRALoadResult(release, len(socs), len(pts), len(llts), len(hierarchy))


def meddra_lookup(*, release: MedDRARelease, text: str, limit: int = 20):
    """LLTs whose name contains ``text``, with their PT and primary SOC (for central coding)."""
    return (
        MedDRALLT.objects.filter(release=release, name__icontains=text.strip())
        .select_related("pt__primary_soc")
        .order_by("-is_current", "name")[:limit]
    )
