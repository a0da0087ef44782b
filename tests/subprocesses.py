"""Running a command from a test. Its timeout guards against a hang, not against a slow machine: it
is generous (20 minutes) and scales with TEST_TIMEOUT_SCALE (e.g. 3 on a machine busy with other
work), and running past it fails the test with a message that says so, not a bare TimeoutExpired."""

from __future__ import annotations

import os
import subprocess

import pytest

TIMEOUT_SCALE = float(os.environ.get("TEST_TIMEOUT_SCALE", "1"))
HANG_SECONDS = 1200 * TIMEOUT_SCALE


def run_subprocess(args: list, **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, timeout=HANG_SECONDS, **kwargs)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(map(str, args))}` ran past {HANG_SECONDS:.0f} s: a hang, or a machine far busier "
                    f"than usual (TEST_TIMEOUT_SCALE={TIMEOUT_SCALE:g}; raise it to wait longer)", pytrace=False)
