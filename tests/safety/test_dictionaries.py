"""Coding dictionaries (docs/domain.md Part A §1.3, §7): the shipped CTCAE v5.0 subset, the importer for
NCI's full spreadsheet saved as CSV, and the MedDRA ASCII loader, tested with a small synthetic
dictionary in the MedDRA file layout written by the test (no MedDRA content ships)."""

from __future__ import annotations

import csv
import io

import pytest
from django.core.management import CommandError, call_command

from safety.dictionaries import SHIPPED_CTCAE, DictionaryError, ctcae_load_shipped, meddra_load, meddra_lookup
from safety.models import CTCAETerm, MedDRAHierarchy, MedDRALLT, MedDRAPT, MedDRARelease

# Terms the demo and the events of special interest need (issue 4).
REQUIRED_TERMS = {
    "Cytokine release syndrome",
    "Infusion related reaction",
    "Fever",
    "Hypotension",
    "Headache",
    "Fatigue",
    "Nausea",
    "Anemia",
    "Neutrophil count decreased",
    "Upper respiratory infection",
    "Lung infection",
    "Sepsis",
    "Urinary tract infection",
    "Rash maculo-papular",
    "Hypoglycemia",
    "Encephalopathy",
    "Seizure",
}


class TestShippedCTCAE:
    def test_the_subset_has_the_terms_and_attribution_and_no_meddra_codes(self):
        text = SHIPPED_CTCAE.read_text(encoding="utf-8")
        assert "National Cancer Institute" in text
        assert "public domain" in text
        rows = list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))
        assert {row["term"] for row in rows} >= REQUIRED_TERMS
        assert not any("meddra" in column.lower() for column in rows[0])

    def test_it_loads_once(self, db):
        CTCAETerm.objects.all().delete()  # the data migration loaded it already
        first = ctcae_load_shipped()
        second = ctcae_load_shipped()
        assert first.created >= len(REQUIRED_TERMS)
        assert (second.created, second.updated) == (0, 0)
        crs = CTCAETerm.objects.get(version="5.0", term="Cytokine release syndrome")
        assert crs.soc == "Immune system disorders"
        assert [grade for grade, _ in CTCAETerm.objects.get(term="Headache").grades] == [1, 2, 3]

    def test_the_command_loads_the_subset_by_default(self, db, capsys):
        call_command("load_ctcae")
        assert "CTCAE v5.0" in capsys.readouterr().out


NCI_LIKE = """MedDRA Code,MedDRA SOC,CTCAE Term,Grade 1,Grade 2,Grade 3,Grade 4,Grade 5,Definition,Navigational Note
10011111,Nervous system disorders,Headache,Mild pain,Moderate pain; limiting instrumental ADL,Severe pain; limiting self care ADL,-,-,A disorder characterized by a sensation of marked discomfort in various parts of the head.,
10022222,Vascular disorders,Flushing,Asymptomatic or mild symptoms,Moderate symptoms,Symptomatic and associated with hypotension,–,–,Episodic reddening of the face.,
"""


class TestNCISpreadsheet:
    @pytest.fixture
    def nci_csv(self, tmp_path):
        path = tmp_path / "CTCAE_v5.csv"
        path.write_text(NCI_LIKE, encoding="utf-8-sig")
        return path

    def test_it_updates_the_subset_and_adds_terms_without_the_meddra_codes(self, db, nci_csv, capsys):
        ctcae_load_shipped()
        call_command("load_ctcae", str(nci_csv), "--ctcae-version", "5.0")
        assert "1 terms added, 1 updated" in capsys.readouterr().out
        flushing = CTCAETerm.objects.get(version="5.0", term="Flushing")
        assert (flushing.soc, flushing.grade_4, flushing.grade_5) == ("Vascular disorders", "", "")
        assert flushing.definition == "Episodic reddening of the face."
        assert "10022222" not in str(CTCAETerm.objects.filter(term="Flushing").values().get())
        headache = CTCAETerm.objects.get(version="5.0", term="Headache")
        assert headache.definition.startswith("A disorder characterized")

    def test_a_second_version_coexists(self, ctcae, nci_csv):
        call_command("load_ctcae", str(nci_csv), "--ctcae-version", "6.0")
        assert set(CTCAETerm.objects.filter(term="Headache").values_list("version", flat=True)) == {"5.0", "6.0"}

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            ("Term,Something\nHeadache,x\n", "Columns not found"),
            ("", "empty"),
            ("CTCAE Term,MedDRA SOC,Grade 1\nHeadache,,Mild\n", "no system organ class"),
            ("CTCAE Term,MedDRA SOC,Grade 1\nHeadache,N,Mild\nHeadache,N,Mild\n", "appears twice"),
        ],
    )
    def test_a_file_in_another_layout_loads_nothing(self, db, tmp_path, content, message):
        path = tmp_path / "bad.csv"
        path.write_text(content, encoding="utf-8")
        before = CTCAETerm.objects.count()
        with pytest.raises(CommandError, match=message):
            call_command("load_ctcae", str(path), "--ctcae-version", "6.0")
        assert CTCAETerm.objects.count() == before

    def test_the_version_is_required_for_a_file(self, db, nci_csv):
        with pytest.raises(CommandError, match="--ctcae-version"):
            call_command("load_ctcae", str(nci_csv))


# A made-up dictionary in the MedDRA ASCII layout ($-separated, trailing $). Codes and names are
# synthetic; they are not MedDRA content.
SOC = "90000001$Synthetic disorders$Synth$$$$$$$$\n90000002$Made-up infections$Madeup$$$$$$$$\n"
PT = "91000001$Fake fever$$90000001$$$$$$$$\n91000002$Fake chest infection$$90000002$$$$$$$$\n"
LLT = (
    "92000001$Fake fever$91000001$$$$$$$Y$$\n"
    "92000002$Fake pyrexia$91000001$$$$$$$Y$$\n"
    "92000003$Fake febrile feeling$91000001$$$$$$$N$$\n"
    "92000004$Fake chest infection$91000002$$$$$$$Y$$\n"
)
MDHIER = (
    "91000001$93000001$94000001$90000001$Fake fever$Fake HLT$Fake HLGT$Synthetic disorders$Synth$$90000001$Y$\n"
    "91000002$93000002$94000002$90000002$Fake chest infection$Fake HLT 2$Fake HLGT 2$Made-up infections$Madeup$$90000002$Y$\n"
    "91000002$93000003$94000003$90000001$Fake chest infection$Fake HLT 3$Fake HLGT 3$Synthetic disorders$Synth$$90000002$N$\n"
)


def _write_release(folder, *, release="99.0$English$\n", **overrides):
    files = {"soc.asc": SOC, "pt.asc": PT, "llt.asc": LLT, "mdhier.asc": MDHIER, "meddra_release.asc": release}
    files.update(overrides)
    ascii_folder = folder / "MedAscii"
    ascii_folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if content is not None:
            (ascii_folder / name).write_text(content, encoding="utf-8")
    return folder


class TestMedDRALoader:
    def test_it_loads_llt_pt_soc_and_the_hierarchy_as_one_version(self, db, tmp_path):
        result = meddra_load(_write_release(tmp_path))
        assert (result.release.version, result.release.language) == ("99.0", "English")
        assert (result.socs, result.pts, result.llts, result.paths) == (2, 2, 4, 3)
        llt = MedDRALLT.objects.get(code=92000002)
        assert (llt.name, llt.pt.name, llt.pt.primary_soc.name) == ("Fake pyrexia", "Fake fever", "Synthetic disorders")
        assert not MedDRALLT.objects.get(code=92000003).is_current
        infection = MedDRAPT.objects.get(code=91000002)
        assert MedDRAHierarchy.objects.filter(pt=infection).count() == 2
        assert MedDRAHierarchy.objects.get(pt=infection, is_primary=True).soc.name == "Made-up infections"
        found = [llt.name for llt in meddra_lookup(release=result.release, text="FAKE f")]
        assert found == ["Fake fever", "Fake febrile feeling"]  # current LLTs first

    def test_the_command_loads_it_and_refuses_the_same_release_twice(self, db, tmp_path, capsys):
        folder = _write_release(tmp_path)
        call_command("load_meddra", str(folder))
        assert "MedDRA 99.0 English: 2 SOCs, 2 PTs, 4 LLTs" in capsys.readouterr().out
        with pytest.raises(CommandError, match="already loaded"):
            call_command("load_meddra", str(folder))
        call_command("load_meddra", str(folder), "--meddra-version", "99.1")
        assert set(MedDRARelease.objects.values_list("version", flat=True)) == {"99.0", "99.1"}

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            ({"mdhier.asc": None}, "Missing MedDRA file"),
            ({"llt.asc": "92000009$Orphan$91999999$$$$$$$Y$$\n"}, "points to PT 91999999"),
            ({"pt.asc": "91000001$Fake fever$$90009999$$$$$$$$\n"}, "points to SOC 90009999"),
            ({"soc.asc": "not-a-code$X$Y$\n"}, "is not a MedDRA code"),
            ({"release": None}, "version is unknown"),
        ],
    )
    def test_a_broken_release_loads_nothing(self, db, tmp_path, overrides, message):
        kwargs = {"release": overrides.pop("release")} if "release" in overrides else {}
        folder = _write_release(tmp_path, **kwargs, **overrides)
        with pytest.raises(DictionaryError, match=message):
            meddra_load(folder)
        assert not MedDRARelease.objects.exists()
        assert not MedDRALLT.objects.exists()
