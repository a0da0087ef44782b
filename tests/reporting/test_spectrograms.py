"""Stage spectrograms: the CLI on the tiny demo set (1 s chunks, prepared and featurized in-process) writes
a readable PNG, and example_rows picks for each class a decodable training chunk of that primary label."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from helpers import ONE_SECOND_CHUNKS, make_params, prepare_and_featurize, run_stage, write_params
from stages.birdclef.prepared import read_classes
import stages.reporting.examples as examples
from stages.reporting.examples import MAX_SPECIES, example_rows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def featurized(demo_root, tmp_path_factory):
    """(work dir, params file, prepared dir, features dir) of the tiny demo in 1 s chunks."""
    work = tmp_path_factory.mktemp("spectrograms")
    overrides = {**ONE_SECOND_CHUNKS, "data.root": str(demo_root)}
    prepared, features = prepare_and_featurize(demo_root, make_params(overrides), work)
    return work, write_params(work / "params.yaml", overrides), prepared, features


def first_train_chunk_by_hand(prepared: Path, features: Path) -> dict[str, int]:
    """Per primary label, the lowest chunk id among decodable training chunks, from the CSVs."""
    chunks = pd.read_csv(prepared / "chunks.csv")
    labels = pd.read_csv(prepared / "labels.csv", keep_default_na=False)
    index = pd.read_csv(features / "index.csv")
    table = chunks.merge(labels[["target_row", "primary_label"]], on="target_row").merge(index, on="chunk_id")
    train = table[(table["split"] == "train") & (table["valid"] == 1)]
    return {label: int(group["chunk_id"].min()) for label, group in train.groupby("primary_label")}


def test_cli_writes_a_readable_png(featurized):
    work, params_file, prepared, features = featurized
    out = work / "reports" / "spectrograms.png"
    result = run_stage("stages.spectrograms", "--params", str(params_file), "--prepared", str(prepared),
                       "--features", str(features), "--out", str(out), cwd=work)
    assert result.returncode == 0, result.stderr
    classes = read_classes(prepared)
    assert f"spectrograms: {len(classes)} species -> {out}" in result.stdout
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    pixels = matplotlib.image.imread(out)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 400  # a grid of panels, not a thumbnail
    assert np.ptp(pixels[..., :3]) > 0  # not a blank canvas
    assert not [p.name for p in out.parent.iterdir() if p.name != out.name]  # no temporary left


def test_example_rows_are_training_chunks_of_each_class(featurized):
    _, _, prepared, features = featurized
    classes = read_classes(prepared)
    rows = example_rows(prepared, features, classes)
    assert list(rows) == classes  # every class of the tiny demo has training chunks, in classes.txt order
    assert rows == first_train_chunk_by_hand(prepared, features)
    chunks = pd.read_csv(prepared / "chunks.csv").set_index("chunk_id")
    labels = pd.read_csv(prepared / "labels.csv", keep_default_na=False).set_index("target_row")
    for code, row in rows.items():
        chunk = chunks.loc[row]
        assert chunk["split"] == "train"
        assert labels.loc[chunk["target_row"], "primary_label"] == code
    # The rows index features.npy: a real log-mel, not padding.
    feats = np.load(features / "features.npy", mmap_mode="r")
    for row in rows.values():
        assert np.isfinite(feats[row]).all() and np.ptp(np.asarray(feats[row], dtype=np.float32)) > 0


# ---------------------------------------------------------------- example_rows on hand-made tables

def hand_made(root: Path, n_classes: int, chunks: list[tuple[str, str, int]]) -> tuple[Path, Path, list[str]]:
    """prepared/ and features/ tables (no audio) for `chunks`: (split, primary label, decodable)."""
    classes = [f"bird{c:02d}" for c in range(n_classes)]
    prepared, features = root / "prepared", root / "features"
    prepared.mkdir(parents=True)
    features.mkdir()
    pd.DataFrame({"chunk_id": range(len(chunks)), "split": [s for s, _, _ in chunks],
                  "path": [f"train_short_audio/{c}/XC{i}.ogg" for i, (_, c, _) in enumerate(chunks)],
                  "start_s": 0.0, "audio_s": 5.0, "target_row": range(len(chunks)),
                  "item_id": [f"XC{i}" for i in range(len(chunks))]}).to_csv(prepared / "chunks.csv", index=False)
    pd.DataFrame({"target_row": range(len(chunks)), "item_id": [f"XC{i}" for i in range(len(chunks))],
                  "split": [s for s, _, _ in chunks], "primary_label": [c for _, c, _ in chunks],
                  "secondary_labels": "", "birds": ""}).to_csv(prepared / "labels.csv", index=False)
    targets = np.zeros((len(chunks), n_classes), dtype=np.float32)
    for i, (_, code, _) in enumerate(chunks):
        if code in classes:
            targets[i, classes.index(code)] = 1.0
    np.save(prepared / "targets.npy", targets)
    pd.DataFrame({"chunk_id": range(len(chunks)), "valid": [int(ok) for _, _, ok in chunks]}).to_csv(
        features / "index.csv", index=False)
    (prepared / "classes.txt").write_text("\n".join(classes) + "\n")
    return prepared, features, classes


def test_example_rows_skip_valid_and_undecodable_chunks(tmp_path):
    chunks = [
        ("valid", "bird01", 1),   # 0: not a training chunk
        ("train", "bird01", 0),   # 1: training, but featurize could not decode it
        ("train", "bird00", 1),   # 2: bird00's first
        ("train", "bird01", 1),   # 3: bird01's first usable
        ("train", "bird00", 1),   # 4
        ("soundscape", "", 1),    # 5
        # bird02: only in valid -> left out
        ("valid", "bird02", 1),   # 6
    ]
    prepared, features, classes = hand_made(tmp_path, 3, chunks)
    assert example_rows(prepared, features, classes) == {"bird00": 2, "bird01": 3}


def test_example_rows_keep_classes_txt_order_and_at_most_max_species(tmp_path):
    n_classes = MAX_SPECIES + 3
    # Training chunks in reverse class order, two per class.
    chunks = [("train", f"bird{c:02d}", 1) for c in reversed(range(n_classes)) for _ in range(2)]
    prepared, features, classes = hand_made(tmp_path, n_classes, chunks)
    rows = example_rows(prepared, features, classes)
    assert list(rows) == classes[:MAX_SPECIES]
    for code, row in rows.items():  # the first of the two chunks of that class
        assert chunks[row][1] == code and (row == 0 or chunks[row - 1][1] != code)


def test_panels_share_the_colour_scale_of_the_colorbar(tmp_path, monkeypatch):
    import stages.reporting.examples as examples

    figures = []
    monkeypatch.setattr(examples, "save_png", lambda fig, path: figures.append(fig))
    rng = np.random.default_rng(0)
    features = np.stack([rng.normal(-10, 1, (32, 40)), rng.normal(0, 3, (32, 40))]).astype(np.float16)
    examples.plot_examples(features, {"quiet": 0, "loud": 1}, 32000, 320, 50.0, 14000.0, tmp_path / "x.png")
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.get_title() in ("quiet", "loud")]
    assert len(panels) == 2
    limits = {ax.collections[0].get_clim() for ax in panels}
    assert len(limits) == 1, limits


def test_panels_name_secondary_labels_and_real_audio_length(tmp_path):
    """Titles carry the recording's other species, and a chunk shorter than 5 s is marked where its
    zero padding starts (the demo's first amerob recording carries rewbla)."""
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    pd.DataFrame({"chunk_id": [0, 1], "split": ["train", "train"], "path": ["a.ogg", "b.ogg"],
                  "start_s": [0.0, 0.0], "audio_s": [5.0, 2.5], "target_row": [0, 1],
                  "item_id": ["XC1", "XC2"]}).to_csv(prepared / "chunks.csv", index=False)
    pd.DataFrame({"target_row": [0, 1], "item_id": ["XC1", "XC2"], "split": ["train", "train"],
                  "primary_label": ["amerob", "norcar"], "secondary_labels": ["rewbla", ""],
                  "birds": ["", ""]}).to_csv(prepared / "labels.csv", index=False)
    details = examples.example_details(prepared, {"amerob": 0, "norcar": 1})
    assert details == {"amerob": examples.ExampleDetail(5.0, "rewbla"), "norcar": examples.ExampleDetail(2.5, "")}
    features = np.random.default_rng(0).normal(-6, 2, (2, 128, 501)).astype(np.float16)
    examples.plot_examples(features, {"amerob": 0, "norcar": 1}, 32000, 320, 50.0, 14000.0, tmp_path / "x.png",
                           details)
    assert (tmp_path / "x.png").stat().st_size > 10_000
