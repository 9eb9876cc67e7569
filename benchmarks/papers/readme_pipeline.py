"""Check the seed-0 pipeline figures of docs/pipeline.md against a run of command 1.

    edge-ids pipeline --data-dir ../shared/datasets --out out/nsl-kdd
    python -m edge_ids.benchmarks.papers.readme_pipeline out/nsl-kdd
    python -m edge_ids.benchmarks.papers.readme_pipeline --seeds out/nsl-kdd out/nsl-kdd-s1 out/nsl-kdd-s2

The README's table under "Produced by command 1" must be exactly the run's summary.md table,
and its agreement percentages and bundle sizes those of the run. Exits 1 and prints the
differences otherwise (tests/test_pipeline.py runs command 1 and this check, slow set).
With --seeds it prints the README's table over seeds from runs with `--seed 0`, `1`, `2`.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "docs" / "pipeline.md"  # where the table is
MARKER = "Produced by command 1"
RECORD = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "pipeline"


def table_after(text: str, marker: str) -> list[str]:
    """The first markdown table after the line holding `marker` (rows, whitespace trimmed)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if marker in line), None)
    if start is None:
        raise ValueError(f"no line with {marker!r}")
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            rows.append(" ".join(line.split()))
        elif rows:
            break
    return rows


def differences(run: Path, readme: Path = README) -> list[str]:
    """What the README says that the run at `run` (its --out folder) does not."""
    text = readme.read_text()
    summary = (run / "summary.md").read_text()
    problems = []
    ours = table_after(text, MARKER)
    theirs = [" ".join(line.split()) for line in summary.splitlines() if line.startswith("|")]
    for i in range(max(len(ours), len(theirs))):
        a = ours[i] if i < len(ours) else "(missing)"
        b = theirs[i] if i < len(theirs) else "(missing)"
        if a != b:
            problems.append(f"table row {i + 1}:\n  README:     {a}\n  summary.md: {b}")
    section = text[text.index(MARKER):]
    agreement = dict(re.findall(r"(KDDTest[^ ]*) (\d+\.\d\d) %", summary.split("agreement:")[1]))
    claimed = re.search(r"agree on (\d+\.\d\d) % of KDDTest\+ and (\d+\.\d\d) % of KDDTest-21",
                        section)
    if not claimed or claimed.groups() != (agreement["KDDTest+"], agreement["KDDTest-21"]):
        problems.append(f"agreement: README {claimed.groups() if claimed else None}, run "
                        f"{agreement}")
    for name in ("model.tflite", "features.json"):
        size = (run / "bundle" / name).stat().st_size
        said = re.search(rf"`{re.escape(name)}` ([\d,]+)", section)
        if not said or int(said.group(1).replace(",", "")) != size:
            problems.append(f"{name}: README {said.group(1) if said else None}, run {size:,}")
    return problems


def seeds_table(runs: list[Path]) -> str:
    """The README's table over seeds: mean ± sample std of each run's manifest metrics."""
    import json

    import numpy as np

    manifests = [json.loads((Path(r) / "bundle" / "manifest.json").read_text()) for r in runs]
    lines = ["| test set | model | acc | macro-F1 | FPR | DR DoS | DR Probe | DR R2L | DR U2R "
             "| int8 agrees with float |", "|---|---|---|---|---|---|---|---|---|---|"]
    for test in manifests[0]["int8_float_agreement"]:
        for variant in ("float", "int8"):
            ms = [m["metrics"][variant][test] for m in manifests]
            cells = []
            for key, digits in (("accuracy", 2), ("macro_f1", 2), ("fpr", 2), ("DoS", 1),
                                ("Probe", 1), ("R2L", 1), ("U2R", 1)):
                v = 100 * np.array([m[key] if key in m else m["recall"][key] for m in ms])
                cells.append(f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}")
            agree = (", ".join(f"{100 * m['int8_float_agreement'][test]:.2f}" for m in manifests)
                     if variant == "int8" else "")
            lines.append(f"| {test} | {variant} | " + " | ".join(cells) + f" | {agree} |")
    return "\n".join(lines)


def record(runs: list[Path], out: Path = RECORD) -> Path:
    """Keep the runs' summaries and the table over seeds as committed results (what
    docs/pipeline.md quotes): OUT/seed-<n>.md and OUT/seeds.md."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    for run in runs:
        seed = json.loads((Path(run) / "bundle" / "manifest.json").read_text())["training"][
            "options"]["seed"]
        (out / f"seed-{seed}.md").write_text((Path(run) / "summary.md").read_text())
    (out / "seeds.md").write_text(
        "# The pipeline over seeds\n\nWritten by `python -m edge_ids.benchmarks.papers."
        "readme_pipeline --record RUN...` from runs of `edge-ids pipeline --data-dir "
        "../shared/datasets --out RUN --seed N`; mean ± sample std (n − 1), percentages.\n\n"
        + seeds_table([Path(r) for r in runs]) + "\n")
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--seeds":
        print(seeds_table([Path(r) for r in argv[1:]]))
        return 0
    if argv and argv[0] == "--record":
        print(f"wrote {record([Path(r) for r in argv[1:]])}")
        return 0
    run = Path(argv[0] if argv else "out/nsl-kdd")
    problems = differences(run)
    for p in problems:
        print(p)
    print("README pipeline figures: " + ("match" if not problems else
                                        f"{len(problems)} differences") + f" ({run})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
