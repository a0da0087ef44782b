"""dvc.yaml lists, for every stage, every project module its command imports (directly or not): a
module missing from `deps` would let a code change leave stale results that `dvc status` calls
up to date."""

from __future__ import annotations

import ast
import re

import pytest
import yaml

from conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def project_imports(module: str, seen: set[str] | None = None) -> set[str]:
    """`module` and every stages.* module it imports, transitively, as file paths."""
    seen = set() if seen is None else seen
    path = f"{module.replace('.', '/')}.py"
    if path in seen:
        return seen
    seen.add(path)
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.startswith("stages.") and (ROOT / f"{name.replace('.', '/')}.py").is_file():
                project_imports(name, seen)
    return seen


def stage_definition(stage: dict) -> dict:
    return stage.get("do", stage)  # foreach stages keep their definition under `do`


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_imported_module_is_a_dependency(name):
    stage = stage_definition(STAGES[name])
    module = re.search(r"python -m (stages\.\w+)", stage["cmd"]).group(1)
    missing = sorted(project_imports(module) - set(stage["deps"]))
    assert not missing, f"stage {name}: add {missing} to its deps in dvc.yaml"
