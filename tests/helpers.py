"""What the tests build, in one place: params from the repo's params.yaml with keys overridden, real
audio files and small datasets in the BirdCLEF 2021 layout, prepared and featurized data, throw-away
DVC repositories, subprocess runners, and comparisons that ignore run-to-run timings. The fixtures
(the tiny demo, one torch thread) are in conftest.py."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` run without `python -m` still finds the stages package
    sys.path.insert(0, str(ROOT))

from stages.audio.features import featurize  # noqa: E402
from stages.audio.ogg import encode_ogg_vorbis, last_page, set_granule, write_ogg_vorbis  # noqa: E402
from stages.birdclef.tables import build_tables  # noqa: E402
from stages.core.params import Params, ParamsError, parse_params  # noqa: E402
from stages.core.problems import Problems  # noqa: E402
from subprocesses import run_subprocess  # noqa: E402

# Small enough for a 2-core machine: 3 species x 3 recordings of at most 8 s, two 20 s soundscapes;
# more secondary labels than the default so label-weight tests have something to change.
TINY_DEMO = {
    "demo.n_species": 3,
    "demo.recordings_per_species": 3,
    "demo.max_recording_seconds": 8.0,
    "demo.secondary_label_fraction": 0.6,
    "demo.n_soundscapes": 2,
    "demo.n_test_soundscapes": 1,
    "demo.soundscape_seconds": 20,
    "demo.n_background_files": 5,  # one clip of each noise kind
    "demo.background_seconds": 5.0,
}
# The tiny demo in 1 s chunks (128 x 101 log-mels), featurized in-process on the CPU: a training
# epoch takes a second or two.
ONE_SECOND_CHUNKS = {
    **TINY_DEMO,
    "data.chunk_seconds": 1.0,
    "data.hop_seconds": 1.0,
    "data.min_remainder_seconds": 0.5,
    "features.workers": 0,
    "features.device": "cpu",
}
METADATA_COLUMNS = [  # the 14 columns of BirdCLEF 2021's train_metadata.csv
    "primary_label", "secondary_labels", "type", "latitude", "longitude", "scientific_name",
    "common_name", "author", "date", "filename", "license", "rating", "time", "url",
]
# The tiny demo in 1 s chunks, two epochs of batches of 4 on the CPU: the whole pipeline under `dvc
# repro` in a minute or so (tests/pipeline/).
# The recipe elements off (every chunk every epoch, no shift, no noise, no weight average): tests of
# the loop, resume and evaluation that pin their recipe, whatever params.yaml's defaults; the elements
# have their own tests (tests/training/test_crops.py, test_noise.py, test_noise_folder.py, test_ema.py).
PLAIN_RECIPE = {
    "train.chunks_per_recording": "all",
    "train.time_shift_frames": 0,
    "train.background_probability": 0.0,
    "train.nocall_probability": 0.0,
    "train.ema_decay": 0.0,
}
PIPELINE_SMALL = {
    **ONE_SECOND_CHUNKS,
    "train.epochs": 2,
    "train.batch_size": 4,
    "train.device": "cpu",
}
TIMING_KEY = re.compile(r"second|memory")  # summary keys that vary run to run


# ---------------------------------------------------------------------------------------- params

def raw_params(overrides: dict | None = None) -> dict:
    """The repo's params.yaml as a dict, with dotted keys overridden ("data.root": ...).

    Every overridden key must already exist, so the tests follow the real file.
    """
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in (overrides or {}).items():
        node, leaf = parent_and_leaf(raw, dotted)
        if leaf not in node:
            raise KeyError(f"params.yaml has no key {dotted!r}")
        node[leaf] = value
    return raw


def parent_and_leaf(raw: dict, dotted: str) -> tuple[dict, str]:
    """The mapping that holds a dotted key's last part: ("data.root") -> (raw["data"], "root")."""
    *parents, leaf = dotted.split(".")
    node = raw
    for name in parents:
        node = node[name]
    return node, leaf


def set_key(raw: dict, dotted: str, value) -> dict:
    """`raw` with a dotted key set, whether params.yaml has it or not (tests of unknown keys)."""
    node, leaf = parent_and_leaf(raw, dotted)
    node[leaf] = value
    return raw


def error_for(raw: dict) -> str:
    """The ParamsError message that parsing `raw` must raise."""
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    return str(caught.value)


def make_params(overrides: dict | None = None) -> Params:
    return parse_params(raw_params(overrides))


def write_params(path: Path, overrides: dict | None = None) -> Path:
    path.write_text(yaml.safe_dump(raw_params(overrides), sort_keys=False))
    return path


# ------------------------------------------------------------------------------------ audio files

def tone(seconds: float, sample_rate: int = 32000, freq: float = 2000.0, amplitude: float = 0.3,
         noise: float = 0.01, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t) + noise * rng.normal(0, 1, len(t))).astype(np.float32)


def write_ogg(path: Path, audio: np.ndarray, sample_rate: int = 32000, serial: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_ogg_vorbis(path, np.clip(audio, -1, 1).astype(np.float32), sample_rate, serial=serial)
    return path


def ogg_claiming(samples: int, sample_rate: int = 32000, serial: int = 5) -> bytes:
    """3 s of real Ogg Vorbis whose last page claims `samples` samples (its granule position), which
    is where libsndfile reads a file's length from."""
    data = bytearray(encode_ogg_vorbis(tone(3.0, sample_rate), sample_rate, serial))
    set_granule(data, last_page(data), samples)
    return bytes(data)


def metadata_row(primary: str, filename: str, secondary: str = "[]", rating: float = 4.0) -> dict:
    return {"primary_label": primary, "secondary_labels": secondary, "type": "['call']",
            "latitude": 40.0, "longitude": -75.0, "scientific_name": "Avis testis",
            "common_name": "Test Bird", "author": "Tester", "date": "2020-01-01",
            "filename": filename, "license": "CC", "rating": rating, "time": "08:00",
            "url": "https://www.xeno-canto.org/0"}


# Where make_dataset keeps one built copy of each dataset it was asked for, for the life of the test
# process: encoding the Ogg files takes about 1.3 s a dataset, copying them about 0.01 s.
_TEMPLATES = tempfile.TemporaryDirectory(prefix="dataset-templates-")


def make_dataset(root: Path, species: tuple[str, ...] = ("amerob", "norcar"), per_species: int = 3,
                 seconds: float = 6.0, soundscape: bool = True) -> Path:
    """A small valid BirdCLEF-layout dataset at `root`: `per_species` recordings per species (tones
    of their own frequency), one 10 s soundscape. Built once per session for each set of arguments,
    then copied, so tests may change their copy freely."""
    key = f"{'-'.join(species)}_{per_species}x{seconds}s{'_soundscape' if soundscape else ''}"
    template = Path(_TEMPLATES.name) / key
    if not template.exists():
        building = template.with_name(template.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        _write_dataset(building, species, per_species, seconds, soundscape)
        building.rename(template)  # whole or absent, should a test be interrupted here
    shutil.copytree(template, root, dirs_exist_ok=True)
    return root


def _write_dataset(root: Path, species: tuple[str, ...], per_species: int, seconds: float,
                   soundscape: bool) -> Path:
    rows = []
    for s, code in enumerate(species):
        for k in range(per_species):
            filename = f"XC{s}{k:03d}.ogg"
            write_ogg(root / "train_short_audio" / code / filename,
                      tone(seconds, freq=1500 + 1000 * s, seed=10 * s + k), serial=100 * s + k + 1)
            rows.append(metadata_row(code, filename))
    write_metadata(root, rows)
    if soundscape:
        write_ogg(root / "train_soundscapes" / "10000_COR_20200115.ogg", tone(10.0, amplitude=0.0),
                  serial=9999)
        pd.DataFrame([
            {"row_id": "10000_COR_5", "site": "COR", "audio_id": 10000, "seconds": 5, "birds": "nocall"},
            {"row_id": "10000_COR_10", "site": "COR", "audio_id": 10000, "seconds": 10,
             "birds": species[0]},
        ]).to_csv(root / "train_soundscape_labels.csv", index=False)
    return root


def write_metadata(root: Path, rows: list[dict]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=METADATA_COLUMNS).to_csv(root / "train_metadata.csv", index=False)


# ----------------------------------------------------------------------------------------- misc

def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


def subprocess_env() -> dict[str, str]:
    """Environment whose `python` is this interpreter and that can import the stages package."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def run_stage(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_subprocess([sys.executable, "-m", module, *args], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True)


def project_repo(tmp_path_factory: pytest.TempPathFactory, overrides: dict) -> SimpleNamespace:
    """A throw-away git + DVC repository holding a copy of the project (code committed) with params
    `overrides`; `.run(*args)` runs a command there, DVC analytics and update checks off."""
    home = tmp_path_factory.mktemp("dvc_home")
    (home / "config").write_text("[core]\n    analytics = false\n    check_update = false\n")
    env = subprocess_env()  # PATH starts with this interpreter's folder: its `python` and `dvc`
    env.pop("PYTHONPATH")  # stages run from the copy, the way `dvc repro` runs them for a user
    env.update(DVC_GLOBAL_CONFIG_DIR=str(home), DVC_SITE_CACHE_DIR=str(home / "site"),
               GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=str(home / "gitconfig"))
    # One torch thread per stage: on a shared 2-core machine torch's default (one per core) spins
    # against any other load and made a 1 s training run take 90 s; alone it changes little.
    env.setdefault("OMP_NUM_THREADS", "1")
    repo = tmp_path_factory.mktemp("experiment") / "project"
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    write_params(repo / "params.yaml", overrides)

    def run(*args, check=True, env_update: dict | None = None) -> subprocess.CompletedProcess:
        result = run_subprocess(args, cwd=repo, env={**env, **(env_update or {})}, capture_output=True,
                                text=True)
        if check:
            assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    run("git", "init", "-q")
    run("git", "config", "user.name", "Pipeline Test")
    run("git", "config", "user.email", "pipeline-test@example.com")
    run("dvc", "init", "-q")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    # DVCLive cannot start in a git repository without a commit (see test_train_needs_a_commit_...),
    # so the project's code is committed before the first `dvc repro`, as in any real checkout.
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "project")
    return SimpleNamespace(repo=repo, run=run, env=env)


def prepare_and_featurize(root: Path, params: Params, out: Path) -> tuple[Path, Path]:
    """What stages `prepare` and `featurize` write for the dataset at `root`, made in-process under
    `out`; returns (prepared dir, features dir)."""
    tables = build_tables(root, params.data, params.seed, Problems(strict=False))
    prepared, features = out / "prepared", out / "features"
    tables.write(prepared)
    features.mkdir()
    featurize(tables.chunks, root, params.data, params.features, features, Problems(strict=False))
    return prepared, features


# ---------------------------------------------------------------------------- featurize inputs

def run_featurize(chunks: pd.DataFrame, root: Path, out: Path, overrides: dict | None = None, strict: bool = True):
    """featurize() in this process, without worker processes, into `out`: (report, params)."""
    params = make_params({"data.root": str(root), "features.workers": 0, **(overrides or {})})
    out.mkdir()
    problems = Problems(strict=strict)
    report = featurize(chunks, root, params.data, params.features, out, problems)
    return report, params


def chunk_table(rows: list[tuple]) -> pd.DataFrame:
    """rows: (split, path, start_s, audio_s) -> a chunk table like prepare's."""
    table = pd.DataFrame(rows, columns=["split", "path", "start_s", "audio_s"])
    table.insert(0, "chunk_id", np.arange(len(table)))
    table["target_row"] = np.arange(len(table))
    table["item_id"] = table["path"]
    return table


# ------------------------------------------------------------------------------------ comparisons

def without_timing(value):
    """`value` with every key that names a time or a memory figure removed, recursively."""
    if isinstance(value, dict):
        return {key: without_timing(item) for key, item in value.items() if not TIMING_KEY.search(key)}
    return value


def hand_f1(truth: list[set[str]], predicted: list[set[str]]) -> float:
    """BirdCLEF's row-wise F1 written out by hand: the mean over rows of 2|T & P| / (|T| + |P|)."""
    return float(np.mean([2 * len(t & p) / (len(t) + len(p)) for t, p in zip(truth, predicted)]))


def ran_stages(output: str) -> list[str]:
    """The stages a `dvc repro` or `dvc exp run` printed as running, in order."""
    return re.findall(r"Running stage '([^']+)'", output)
