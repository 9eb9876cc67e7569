"""Every measured figure in README.md and docs/*.md comes from a committed results file written
by a committed command (issue 39, point 7).

docs/figures.yml is the index (docs/figures-*.yml hold the figures of docs/*.md and may add
results files and not_measured entries). `results:` names each results file under benchmarks/results/ and
the command that writes it; `figures:` holds one entry a figure: its `text` as the documents
print it, the `docs` it appears in, the results `file`, one JSON Pointer (RFC 6901; `*` takes
every member) or a list of them in `path`, and how the value becomes the text: an optional
`expr` over the pointed values `v[0]`, `v[1]`... (mean, stdev, median, ... available), an
optional `scale` (100 for a ratio printed as %), then `format` (a str.format template). A `text`
may carry a few words of context ("median 32 s") so that it names one place in its document.

What counts as a figure (the check in test_every_measured_figure_is_indexed): outside fenced
code blocks, code spans and link targets, a number with a unit (%, µs, ms, s, min, h, KiB, MiB,
MB, GB, bytes), a range of them ("74.3-89.3 %"), a mean ± spread, a count out of a total
("72/72", "144 of 144"), a rate per week or device-week, and a decimal number alone at the start
of a table cell. Each must lie inside an occurrence of an indexed text of that document, or be
not measured by one of two rules:

1. a bound, not a result: the number follows ≤, ≥, <, > or the words target(s), at most,
   at least, up to, default, timeout (targets, limits and options the text states);
2. an explicit entry of `not_measured:` in the index, each with the reason (sizes and times
   that are configuration, a paper's own figure, an example's input), for the few that neither
   rule catches. An entry must still occur in its document, so the list cannot go stale.

A figure with no results file is removed from the documents, not allow-listed.
"""
from __future__ import annotations

import json
import re
import statistics
import subprocess
from functools import cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
INDEX = REPO / "docs" / "figures.yml"
INDEX_DOCS = sorted((REPO / "docs").glob("figures-*.yml"))  # the figures of docs/*.md
DOCS = ["README.md"] + sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))

NUM = r"\d(?:[\d,]*\d)?(?:\.\d+)?"
UNIT = r"(?:%|µs|us|ms|s|min|h|KiB|MiB|GiB|kB|KB|MB|GB|bytes)"
FIGURE = re.compile("|".join([
    # 12.3 %, 74.3-89.3 %, 1.4 ± 0.2 %, 5 s, +9.6 MB, 1,542 s
    rf"{NUM}(?:\s?[-–]\s?{NUM})?(?:\s?±\s?{NUM})?\s?{UNIT}(?![\w/])",
    rf"{NUM}\s?±\s?{NUM}",                                   # 82.87 ± 0.15
    rf"{NUM}/{NUM}(?![\w/])",                                # 72/72
    rf"{NUM} of {NUM}(?!\w)",                                # 144 of 144
    rf"{NUM}(?= (?:false incidents )?(?:a|per) (?:device[- ])?(?:per )?week)",  # 0.53 a week
    rf"(?<=\| ){NUM}\.\d+(?= |$)",                           # | 0.53 | (a bare decimal cell)
]))
BOUND = re.compile(r"(?:[≤≥<>]|\btargets?:?|\bat most|\bat least|\bup to|\bdefault|\btimeout)"
                   r"[\s(*+~]*$", re.I)


def load_index() -> dict:
    index = yaml.safe_load(INDEX.read_text())
    for path in INDEX_DOCS:
        part = yaml.safe_load(path.read_text())
        index["figures"] += part.get("figures") or []
        index["results"].update(part.get("results") or {})
        index["not_measured"] += part.get("not_measured") or []
    return index


def prose(text: str) -> str:
    """The text with fenced code blocks, code spans, link targets and HTML comments blanked
    (same length, so offsets stay)."""
    def blank(m):
        return re.sub(r"[^\n]", " ", m.group())
    text = re.sub(r"^```.*?^```", blank, text, flags=re.S | re.M)
    text = re.sub(r"<!--.*?-->", blank, text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", blank, text)
    return re.sub(r"\]\([^)\s]*\)", blank, text)


def candidates(text: str) -> list[tuple[int, int, str]]:
    """(start, end, figure) of every measured-looking figure in a document, bounds left out."""
    clean = prose(text)
    out = []
    for m in FIGURE.finditer(clean):
        if m.start() and re.match(r"[\w.,/:#-]", clean[m.start() - 1]):
            continue  # inside a word, a version or a path
        line_start = clean.rfind("\n", 0, m.start()) + 1
        if BOUND.search(clean[line_start:m.start()]):
            continue
        out.append((m.start(), m.end(), m.group()))
    return out


def pointer(data, path: str):
    """RFC 6901 JSON Pointer, with `*` for every member of an object or array (a list)."""
    nodes, star = [data], False
    for raw in path.split("/")[1:]:
        key = raw.replace("~1", "/").replace("~0", "~")
        if key == "*":
            star = True
            nodes = [v for n in nodes for v in (n.values() if isinstance(n, dict) else n)]
        else:
            nodes = [n[int(key)] if isinstance(n, list) else n[key] for n in nodes]
    return nodes if star else nodes[0]


@cache
def results(file: str):
    return json.loads((REPO / file).read_text())


FUNCTIONS = {"mean": statistics.mean, "stdev": statistics.stdev, "median": statistics.median,
             "min": min, "max": max, "sum": sum, "len": len, "abs": abs, "round": round,
             "sorted": sorted, "float": float, "int": int}


def rendered(entry: dict) -> str:
    if "path" not in entry:  # a markdown-only results file: the command's own table
        words = " ".join((REPO / entry["file"]).read_text().split())
        return entry["text"] if " ".join(entry["text"].split()) in words else \
            f"(not in {entry['file']})"
    paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
    values = [pointer(results(entry["file"]), p) for p in paths]
    if "expr" in entry:
        out = eval(entry["expr"], {"__builtins__": {}, **FUNCTIONS, "v": values})  # noqa: S307
        values = list(out) if isinstance(out, tuple) else [out]
    scale = entry.get("scale", 1)
    values = [v * scale if isinstance(v, (int, float)) and not isinstance(v, bool) else v
              for v in values]
    return entry["format"].format(*values)


INDEXED = load_index()
FIGURES = INDEXED["figures"]


def test_results_files_are_committed_and_their_commands_exist():
    tracked = subprocess.run(["git", "ls-files", "benchmarks/results"], cwd=REPO, text=True,
                             capture_output=True, check=True).stdout.split()
    cli = "\n".join(p.read_text() for p in (REPO / "edge_ids").glob("cli*.py"))
    for file, spec in INDEXED["results"].items():
        assert file in tracked, f"{file} is not a committed results file"
        command = spec["command"]
        if m := re.match(r"python -m edge_ids\.benchmarks\.([\w.]+)", command):
            module = REPO / "benchmarks" / (m.group(1).replace(".", "/") + ".py")
            assert module.is_file(), f"{file}: {command} names no committed module"
            assert "__main__" in module.read_text(), f"{module} cannot be run with -m"
        else:
            m = re.match(r"edge-ids (\w+)", command)
            assert m and re.search(rf"\bdef {m.group(1)}\(|name=\"{m.group(1)}\"", cli), \
                f"{file}: {command} is not an edge-ids command"
    assert {f["file"] for f in FIGURES} <= set(INDEXED["results"]), "a figure's file has no command"


@pytest.mark.parametrize("entry", FIGURES, ids=[f"{f['docs'][0]}:{f['text']}" for f in FIGURES])
def test_figure_matches_its_results_file(entry):
    assert rendered(entry) == entry["text"], (
        f"{entry['file']} {entry.get('path', '')} gives {rendered(entry)!r}, the documents say "
        f"{entry['text']!r}")
    for doc in entry["docs"]:
        assert entry["text"] in prose((REPO / doc).read_text()), \
            f"{entry['text']!r} is not in {doc}'s text"


def uncovered(doc: str, text: str) -> list[str]:
    spans = []
    for entry in FIGURES:
        if doc in entry["docs"]:
            spans += [(m.start(), m.end()) for m in re.finditer(re.escape(entry["text"]), text)]
    for entry in INDEXED["not_measured"]:
        if entry["doc"] == doc:
            spans += [(m.start(), m.end()) for m in re.finditer(re.escape(entry["text"]), text)]
    out = []
    for start, end, figure in candidates(text):
        if not any(a <= start and end <= b for a, b in spans):
            line = text.count("\n", 0, start) + 1
            out.append(f"{doc}:{line}: {figure!r}")
    return out


PENDING = set(INDEXED.get("pending") or ())


@pytest.mark.parametrize("doc", [
    pytest.param(d, marks=pytest.mark.xfail(strict=True, reason="pending in docs/figures.yml"))
    if d in PENDING else d for d in DOCS])
def test_every_measured_figure_is_indexed(doc):
    missing = uncovered(doc, (REPO / doc).read_text())
    assert not missing, ("figures in neither docs/figures.yml nor its not_measured list "
                         "(index them against a results file, or remove them):\n"
                         + "\n".join(missing))


def test_pending_documents_are_few_and_named():
    assert PENDING <= set(DOCS) - {"README.md"}, "README.md cannot be pending; name real docs"


def test_not_measured_entries_occur_and_say_why():
    for entry in INDEXED["not_measured"]:
        assert entry.get("why"), f"{entry} gives no reason"
        assert entry["text"] in (REPO / entry["doc"]).read_text(), f"stale: {entry}"


def test_the_figure_check_tells_measured_from_bounds():
    text = ("The daemon ran at 83.8 % (target ≥ 80 %), +9.6 MB (≤ 10 MB) and 72/72 in 64 s;\n"
            "| 0.53 | 1.4 ± 0.2 % | 144 of 144 | 0.97 per device-week |\n"
            "`--timeout 5 s`, version 3.11.2, default 30 s, [x](a/1.5%.md)\n"
            "```\nlatency 12 ms\n```\n")
    assert [c[2] for c in candidates(text)] == [
        "83.8 %", "9.6 MB", "72/72", "64 s", "0.53", "1.4 ± 0.2 %", "144 of 144", "0.97"]


def test_pointer_and_format():
    assert pointer({"a/b": [1, {"c": 2}], "d": {"x": 1, "y": 3}}, "/a~1b/1/c") == 2
    assert pointer({"d": {"x": 1, "y": 3}}, "/d/*") == [1, 3]
    results.cache_clear()
    entry = {"file": "benchmarks/results/incidents/load.json", "path": "/throughput_ratio",
             "scale": 100, "format": "{:.1f} %"}
    assert re.fullmatch(r"\d+\.\d %", rendered(entry))
