"""stages/core/atomic.py: each process writes under its own temporary name, so two runs writing one
output at once cannot leave a mix of both; temporaries of dead processes are cleared."""

from __future__ import annotations

import os
import subprocess
import sys

from stages.core.atomic import atomic_path, write_text


def test_the_temporary_name_is_this_processes_own(tmp_path):
    with atomic_path(tmp_path / "features") as tmp:
        assert tmp.name == f".features.tmp-{os.getpid()}"
        tmp.mkdir()
        (tmp / "part").write_text("mine")
    assert (tmp_path / "features" / "part").read_text() == "mine"


def test_two_writers_at_once_never_share_a_temporary(tmp_path):
    """A second process writing the same output while this one is half-way: each keeps its own parts,
    and whichever finishes last replaces the output whole."""
    with atomic_path(tmp_path / "out") as mine:
        mine.mkdir()
        (mine / "a").write_text("first run")
        other = subprocess.run([sys.executable, "-c", (
            "import sys; sys.path.insert(0, sys.argv[1]);"
            "from stages.core.atomic import atomic_path;"
            "from pathlib import Path\n"
            "with atomic_path(Path(sys.argv[2]) / 'out') as t:\n"
            "    t.mkdir(); (t / 'b').write_text('second run')"),
            str(os.getcwd()), str(tmp_path)], capture_output=True, text=True)
        assert other.returncode == 0, other.stderr
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b"]
        assert (mine / "a").read_text() == "first run"  # untouched by the other run
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a"]


def test_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".report.json.tmp-{dead.stdout.strip()}"
    alive = tmp_path / f".report.json.tmp-{os.getppid()}"
    stale.write_text("left by a SIGKILL")
    alive.write_text("another run still writing")
    write_text(tmp_path / "report.json", "{}")
    assert not stale.exists() and alive.exists()
    assert (tmp_path / "report.json").read_text() == "{}"
