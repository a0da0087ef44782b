"""pytest's configuration for the suite: its markers and the fixtures shared across folders. The
plain builders the tests import (params, audio files, datasets, DVC repositories) are in helpers.py;
tests/README.md says where each kind of test goes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import TINY_DEMO, make_params
from stages.demo.dataset import generate

MARKERS = {
    "repro": "runs real `dvc repro` in a temporary repository (part of `make test`)",
    "learning": "trains a model on the demo until it must have learned (part of `make test`; minutes)",
    "slow": "kills mid-stage, parallel queues, the AST learning run; minutes each, so not in `make test`: "
            "run them with `make test-slow`",
    "gpu": "needs a CUDA GPU (skipped without one; select with -m gpu)",
}


# The modules that take longest (120, 114, 45, 31, 15 and 13 s here), longest first. `make test`
# hands whole modules to its workers in collection order (--no-loadscope-reorder: xdist would
# otherwise send the modules with the most tests first); starting with the longest keeps the workers'
# loads even (run late, the 2-minute learning module kept one worker busy after the other finished).
LONGEST_FIRST = ("learning/test_learning.py", "pipeline/test_experiments.py", "training/test_resume.py",
                 "benchmarks/test_bench.py", "training/test_data_parallel.py", "training/test_loop.py",
                 "pipeline/test_data_pipeline.py")
TESTS = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.path.relative_to(TESTS).as_posix()
        return LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # a stable sort: the order within each module stays


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo dataset, generated once per session. Read-only: copy it before changing it."""
    params = make_params(TINY_DEMO)
    root = tmp_path_factory.mktemp("demo") / "demo"
    generate(params.demo, params.seed, root)
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for the module's in-process training. On a small shared machine two OpenMP
    threads that spin-wait for each other while another process holds a core made these runs up to
    10x slower; results differ in the last bits between thread counts, and runs compared here always
    use the same one. train() and evaluate() switch on deterministic algorithms for the whole process
    on the CPU: both settings are put back after the module."""
    before, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    torch.use_deterministic_algorithms(deterministic)
