"""The state files a stage reads are checked against each other when it starts: features.npy against
stats.json (shape, truncation) and classes.txt against targets.npy (order, count), each failing with
what to do instead of a wrong figure or a numpy error."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from stages.audio.store import read_feature_stats
from stages.birdclef.prepared import read_classes
from stages.core.problems import DatasetError


def copy_of(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_swapped_class_lines_are_refused(project, tmp_path):
    prepared = copy_of(project.prepared, tmp_path / "prepared")
    assert read_classes(prepared) == sorted(read_classes(prepared))
    lines = (prepared / "classes.txt").read_text().split()
    lines[0], lines[1] = lines[1], lines[0]
    (prepared / "classes.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"classes.txt: 3 codes, not the 3 sorted unique codes.*dvc repro prepare"):
        read_classes(prepared)


def test_a_class_list_shorter_than_the_targets_is_refused(project, tmp_path):
    prepared = copy_of(project.prepared, tmp_path / "prepared")
    (prepared / "classes.txt").write_text("\n".join(read_classes(prepared)[:-1]) + "\n")
    with pytest.raises(DatasetError, match=r"2 codes, not the 3 sorted unique codes"):
        read_classes(prepared)


def test_a_truncated_features_file_is_named_with_what_to_do(project, tmp_path):
    features = copy_of(project.features, tmp_path / "features")
    data = (features / "features.npy").read_bytes()
    (features / "features.npy").write_bytes(data[:len(data) // 2])
    with pytest.raises(DatasetError, match=r"features.npy: missing, truncated or damaged .*dvc repro featurize"):
        read_feature_stats(features)


def test_features_of_another_run_are_refused(project, tmp_path):
    features = copy_of(project.features, tmp_path / "features")
    array = np.load(features / "features.npy")
    np.save(features / "features.npy", array[:-1])
    with pytest.raises(DatasetError, match=r"holds \[\d+, 128, 101\] but stats.json describes .*different featurize"):
        read_feature_stats(features)
