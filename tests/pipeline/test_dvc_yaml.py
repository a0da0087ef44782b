"""dvc.yaml lists, for every stage, every project module its command imports (directly or not): a
module missing from `deps` would let a code change leave stale results that `dvc status` calls
up to date. A package's `__init__.py` counts as a module once it holds code (a docstring does not)."""

from __future__ import annotations

import ast
import re
import shlex

import pytest
import yaml

from helpers import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def holds_code(init_file) -> bool:
    body = ast.parse(init_file.read_text()).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def package_inits(module: str) -> set[str]:
    """The `__init__.py` files Python runs to import `module`, where they hold code."""
    parts = module.split(".")
    inits = (ROOT.joinpath(*parts[:end], "__init__.py") for end in range(1, len(parts)))
    return {init.relative_to(ROOT).as_posix() for init in inits if init.is_file() and holds_code(init)}


def project_imports(module: str, seen: set[str] | None = None) -> set[str]:
    """`module` and every stages.* module it imports, transitively, as file paths."""
    seen = set() if seen is None else seen
    path = f"{module.replace('.', '/')}.py"
    if path in seen:
        return seen
    seen.add(path)
    seen |= package_inits(module)
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


@pytest.mark.parametrize("name", sorted(STAGES))
def test_no_module_is_a_dependency_its_command_does_not_import(name):
    """The other direction: a stale entry would re-run a stage for a change that cannot touch it."""
    stage = stage_definition(STAGES[name])
    module = re.search(r"python -m (stages\.\w+)", stage["cmd"]).group(1)
    listed = {dep for dep in stage["deps"] if dep.startswith("stages/")}
    extra = sorted(listed - project_imports(module))
    assert not extra, f"stage {name}: {extra} in its deps in dvc.yaml is not imported by {module}"


def test_a_package_init_with_code_is_a_dependency(tmp_path, monkeypatch):
    """The rule above, on a made-up package: an `__init__.py` holding only a docstring is not listed,
    one that runs code is."""
    package = tmp_path / "stages" / "pkg"
    package.mkdir(parents=True)
    (tmp_path / "stages" / "__init__.py").write_text('"""Only a docstring."""\n')
    (package / "__init__.py").write_text('"""A docstring, then code."""\nVALUE = 1\n')
    (package / "mod.py").write_text("X = 2\n")
    (tmp_path / "stages" / "entry.py").write_text("from stages.pkg.mod import X\n")
    monkeypatch.setattr("test_dvc_yaml.ROOT", tmp_path)
    assert project_imports("stages.entry") == {"stages/entry.py", "stages/pkg/mod.py", "stages/pkg/__init__.py"}


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_a_model_name_stays_one_shell_word_in_every_command(stage):
    """Defence in depth behind the name check of params.py: DVC pastes `${key}` into a shell command,
    so each place it appears is quoted. A name with `;` must reach the stage as one argument."""
    command = STAGES[stage]["do"]["cmd"].replace("${key}", "e;touch PWNED;#")
    words = shlex.split(command)
    assert words[words.index("--model") + 1] == "e;touch PWNED;#"
    assert not any(word in ("touch", "PWNED") for word in words)
