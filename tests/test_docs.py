"""The documentation against the files it describes, so that it cannot drift silently.

- The README's results table quotes reports/scores.json (and the baselines of reports/comparison.csv)
  at its own rounding: a re-run that changes a result fails here until the README is updated.
- The README's pipeline graph has exactly the edges dvc.yaml defines (a stage depends on another
  when one of its deps is, holds or lies inside one of the other's outs).
- Every relative link in README.md and docs/*.md points to a file that exists (and to a heading
  that exists, for a link with an anchor into a Markdown file); every `stages/`, `bench/` or
  `tests/` Python path they name exists.
- README.md stays short enough for a first reading: at most 200 lines.

Plain text, JSON, CSV and YAML only: no subprocess, nothing imported from stages/
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from helpers import ROOT

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 200

# README results table column -> key of each model in reports/scores.json
SCORE_COLUMNS = {"valid mAP": "mAP", "soundscape row-wise F1": "F1", "min valid loss": "loss",
                 "parameters (as trained)": "params"}
# ... and, for the baseline row, column -> column of reports/comparison.csv (the same for every model)
BASELINE_COLUMNS = {"valid mAP": "baseline_prior_map", "soundscape row-wise F1": "baseline_nocall_f1",
                    "min valid loss": "baseline_prior_loss"}

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE_PATH = re.compile(r"\b(?:stages|bench|tests)/[\w/]+\.py\b")


def page_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# --- the results table ---------------------------------------------------------------------------

def results_table() -> tuple[list[str], list[list[str]]]:
    """Header and rows of the README table whose first column is `model`."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"\|\s*model\s*\|", line))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, body = rows[0], rows[2:]  # rows[1] is the alignment row
    return header, body


def assert_quotes(cell: str, value: float, where: str) -> None:
    """`cell` is `value` at the cell's own rounding: 0.964 for 0.9637, 4,014,658 for 4014658."""
    assert cell, f"{where}: empty cell"
    if "." in cell:
        decimals = len(cell.split(".")[1])
        assert f"{float(value):.{decimals}f}" == cell, f"{where}: README says {cell}, the file {value}"
    else:
        assert f"{int(value):,}" == cell, f"{where}: README says {cell}, the file {value}"


def test_the_readme_results_table_quotes_scores_json():
    scores = json.loads((ROOT / "reports" / "scores.json").read_text())
    header, body = results_table()
    assert header[0] == "model" and set(header[1:]) == set(SCORE_COLUMNS), header
    quoted = {}
    for row in body:
        if row[0].startswith("baseline"):
            continue
        model = row[0].strip("`")
        quoted[model] = row
        for column, cell in zip(header[1:], row[1:]):
            assert_quotes(cell, scores[model][SCORE_COLUMNS[column]], f"README results, {model}, {column}")
    assert set(quoted) == set(scores), f"README results table has {sorted(quoted)}, scores.json {sorted(scores)}"


def test_the_readme_baselines_quote_comparison_csv():
    with open(ROOT / "reports" / "comparison.csv", newline="") as file:
        comparison = list(csv.DictReader(file))
    header, body = results_table()
    baseline = [row for row in body if row[0].startswith("baseline")]
    assert len(baseline) == 1, "the README results table should have one baseline row"
    for column, cell in zip(header[1:], baseline[0][1:]):
        if column not in BASELINE_COLUMNS:
            assert not cell, f"README results, baseline, {column}: no baseline is computed for it"
            continue
        for model in comparison:
            assert_quotes(cell, float(model[BASELINE_COLUMNS[column]]), f"README results, baseline, {column}")


# --- the pipeline graph --------------------------------------------------------------------------

def substitute(text: str, params: dict, key: str | None) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1)
        if name == "key":
            return key
        node = params
        for part in name.split("."):
            node = node[part]
        return str(node)
    return re.sub(r"\$\{([\w.]+)\}", value, text).rstrip("/")


def dvc_stages() -> dict[str, tuple[list[str], list[str]]]:
    """Stage name (foreach expanded over params.yaml `models`) -> (deps, outs) as paths."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    expanded = {}
    for name, stage in stages.items():
        keys = [None]
        if "foreach" in stage:
            assert stage["foreach"] == "${models}", f"{name}: this test only expands foreach over models"
            keys, stage = list(params["models"]), stage["do"]
        for key in keys:
            deps = [substitute(dep, params, key) for dep in stage.get("deps", [])]
            outs = [substitute(next(iter(out)) if isinstance(out, dict) else out, params, key)
                    for out in stage.get("outs", [])]
            expanded[name if key is None else f"{name}@{key}"] = (deps, outs)
    return expanded


def overlaps(dep: str, out: str) -> bool:
    return dep == out or dep.startswith(out + "/") or out.startswith(dep + "/")


def readme_graph() -> tuple[set[str], set[tuple[str, str]]]:
    text = README.read_text()
    block = re.search(r"^```mermaid\n(.*?)^```", text, re.MULTILINE | re.DOTALL).group(1)
    labels = dict(re.findall(r'([\w@]+)\["([^"]+)"\]', block))
    node = r'([\w@]+)(?:\["[^"]+"\])?'
    edges = {(labels.get(a, a), labels.get(b, b))
             for a, b in re.findall(rf"^\s*{node}\s*-->\s*{node}\s*$", block, re.MULTILINE)}
    nodes = {name for edge in edges for name in edge} | set(labels.values())
    return nodes, edges


def test_the_readme_pipeline_graph_is_dvc_yaml():
    stages = dvc_stages()
    expected = {(a, b) for a, (_, outs) in stages.items() for b, (deps, _) in stages.items()
                if a != b and any(overlaps(dep, out) for dep in deps for out in outs)}
    nodes, edges = readme_graph()
    assert nodes == set(stages), f"stages missing from the graph: {sorted(set(stages) - nodes)}; " \
                                 f"not stages: {sorted(nodes - set(stages))}"
    assert edges == expected, f"missing edges: {sorted(expected - edges)}; wrong edges: {sorted(edges - expected)}"


# --- links and paths -----------------------------------------------------------------------------

def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    prose = FENCE.sub("", page.read_text())
    return {slug(match) for match in re.findall(r"^#{1,6}\s+(.+)$", prose, re.MULTILINE)}


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_points_to_an_existing_file(page):
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists() or ROOT not in (path, *path.parents):
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target} (no heading '#{anchor}' in {page_id(path)})")
    assert not broken, f"{page_id(page)}: broken links: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_code_path_named_exists(page):
    missing = sorted({path for path in CODE_PATH.findall(page.read_text()) if not (ROOT / path).is_file()})
    assert not missing, f"{page_id(page)} names files that do not exist: {missing}"


def test_the_readme_links_every_docs_page():
    text = README.read_text()
    assert DOCS, "docs/ holds no pages"
    unlinked = [page_id(page) for page in DOCS if f"]({page_id(page)}" not in text]
    assert not unlinked, f"README.md does not link {unlinked}"


def test_the_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail to docs/ (at most {MAX_README_LINES})"
