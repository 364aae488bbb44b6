"""``bench/results``: every result path the benchmark pages name exists, and every current result records
what made it (command, commit, machine), or carries a ``provenance`` object reconstructed from git history."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
PAGES = [ROOT / "README.md", ROOT / "bench" / "README.md", ROOT / "bench" / "HISTORY.md"]
BENCHES = (
    "train",
    "compression",
    "plan_vs_weights",
    "export",
    "pipeline",
    "serve",
    "triton_answer",
    "eval_memory",
    "train_memory",
    "teddy_split",
    "prep",
)
#: named by bench/README.md before they exist: bench/kernel.py has not been run on a GPU yet
PENDING = {"bench/results/kernel/", "bench/results/kernel/kernel.json"}

# a path starts at "bench/results/" (not inside a longer path or a git "REV:path"); braces may hold commas
_PATH = re.compile(r"(?<![\w/:.-])bench/results/(?:\{[^}\s]*\}|[^\s`'\"()\[\]|,;{}<>])*")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _expand(path: str) -> list[str]:
    """Shell brace expansion: ``a/{x,y}_{1,2}.json`` -> 4 paths."""
    parts = re.split(r"\{([^}]*)\}", path)
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    return ["".join(c) for c in itertools.product(*choices)]


def _exists(path: str) -> bool:
    return any(ROOT.glob(path)) if any(c in path for c in "*?[") else (ROOT / path).exists()


def named_paths(text: str) -> list[str]:
    out = []
    for m in _PATH.finditer(text):
        path = m.group(0).rstrip(".:")
        if text[m.end() : m.end() + 1] == "<":  # a placeholder such as bench/results/<bench>/
            continue
        out += _expand(path)
    return out


def test_the_path_parser_reads_what_the_pages_write() -> None:
    text = (
        "see `bench/results/compression/inputs/{gt,gps}_nci1_6min.json`, (bench/results/pipeline/pareto.png). "
        "--merge bench/results/compression/inputs/*.json; bench/results/<bench>/archive/; "
        "git show 064b48c:bench/results/serve.json and old/bench/results/x.json"
    )
    assert named_paths(text) == [
        "bench/results/compression/inputs/gt_nci1_6min.json",
        "bench/results/compression/inputs/gps_nci1_6min.json",
        "bench/results/pipeline/pareto.png",
        "bench/results/compression/inputs/*.json",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_result_path_a_page_names_exists(page: Path) -> None:
    text = page.read_text()
    paths = named_paths(text)
    assert paths, "each page names results"
    missing = sorted({p for p in paths if not _exists(p) and p not in PENDING})
    assert not missing, f"{page.relative_to(ROOT)} names results that do not exist: {missing}"
    links = [t.split("#")[0] for t in _LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    broken = [t for t in links if t and not (page.parent / t).exists()]
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_results_are_one_folder_per_benchmark() -> None:
    assert not [p.name for p in RESULTS.iterdir() if p.is_file()], "results go in bench/results/<bench>/"
    for bench in BENCHES:
        assert any((RESULTS / bench).glob("*.json")), f"no current result in bench/results/{bench}/"


def _current() -> list[Path]:
    return sorted(p for p in RESULTS.rglob("*.json") if "archive" not in p.relative_to(RESULTS).parts)


@pytest.mark.parametrize("path", _current(), ids=lambda p: str(p.relative_to(RESULTS)))
def test_every_current_result_records_what_made_it(path: Path) -> None:
    doc = json.loads(path.read_text())
    assert isinstance(doc, dict)
    if "provenance" not in doc:
        assert {"command", "commit", "machine"} <= doc.keys(), f"{path.name}: no command/commit/machine"
        assert doc["command"] and doc["commit"] and doc["machine"]


@pytest.mark.parametrize("path", sorted(RESULTS.rglob("*.json")), ids=lambda p: str(p.relative_to(RESULTS)))
def test_reconstructed_provenance_says_what_is_known(path: Path) -> None:
    prov = json.loads(path.read_text()).get("provenance")
    if prov is None:
        return
    assert prov["reconstructed"] is True
    assert re.fullmatch(r"[0-9a-f]{40}", prov["commit"]) and prov["date"][:2] == "20"
    assert prov["command"] is None or prov["command"].startswith(("python bench/", "gtc "))
    assert prov["note"], "a reconstructed provenance says where its command comes from, or why there is none"
    assert prov["original_path"].startswith("bench/results/")


#: "commit 1a2b3c4" / "at commit 1a2b3c4" in a page: the code a quoted number was measured on.
_COMMIT = re.compile(r"\bcommit `?([0-9a-f]{7,40})\b")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_commit_a_page_names_is_in_this_history(page: Path) -> None:
    """HISTORY.md gave the Triton answer-latency run as "commit 752f8e9 ... +dirty", a commit of a helper's
    clone that is not in this repository's history, after the result JSON was corrected to d3b5857: a
    reader checking out the commit a number names found nothing to check out."""
    import subprocess

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)

    try:
        shallow = git("rev-parse", "--is-shallow-repository")
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"git cannot run here: {e}")
    if shallow.returncode != 0 or shallow.stdout.strip() != "false":
        pytest.skip("not a full git clone (no history to look commits up in)")
    named = sorted(set(_COMMIT.findall(page.read_text())))
    foreign = [c for c in named if git("merge-base", "--is-ancestor", c, "HEAD").returncode != 0]
    assert not foreign, f"{page.relative_to(ROOT)} names commits outside this history: {foreign}"
