"""The report built from report_inputs' hand-written inputs, for the tests of this folder."""

from __future__ import annotations

import pytest

from report_inputs import MODELS, write_inputs
from stages.reporting.build import build_report


@pytest.fixture
def report(tmp_path):
    train_dir, eval_dir = write_inputs(tmp_path)
    out = tmp_path / "reports"
    returned = build_report(list(MODELS), train_dir, eval_dir, out)
    return out, returned
