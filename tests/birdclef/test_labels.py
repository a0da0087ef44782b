"""Species codes and labels (stages/birdclef/labels.py): secondary labels parsed without `eval`,
the `rocpig1` quirk, codes kept in order, and weak targets."""

import math

import numpy as np
import pytest

from stages.birdclef.labels import (MalformedLabels, is_code, normalize_code, parse_secondary_labels,
                                    split_known, weak_target)


@pytest.mark.parametrize("cell, expected", [
    ("[]", []),
    ("['a', 'b']", ["a", "b"]),
    ("['amerob', 'rewbla']", ["amerob", "rewbla"]),
    ('["amerob"]', ["amerob"]),
    (" [ 'amerob' ] ", ["amerob"]),
    ("[' amerob ']", ["amerob"]),
    (float("nan"), []),
    (None, []),
    ("", []),
    ("   ", []),
])
def test_parse_secondary_labels(cell, expected):
    assert parse_secondary_labels(cell) == expected


def test_rocpig1_is_the_rocpig_class():
    assert parse_secondary_labels("['rocpig1']") == ["rocpig"]
    assert parse_secondary_labels("['amerob', 'rocpig1']") == ["amerob", "rocpig"]


@pytest.mark.parametrize("cell", [
    "['a'",
    "a, b",
    "amerob",
    "[1, 2]",
    "['a', None]",
    "{'a': 1}",
    "{['a']: 1}",
    "('a', 'b')",
    "__import__('os').system('x')",
    "[__import__('os').getcwd()]",
    "[" * 100000,
    "-" * 100000 + "1",
    3.0,
    7,
])
def test_malformed_secondary_labels_raise(cell):
    with pytest.raises(MalformedLabels):
        parse_secondary_labels(cell)


def test_parsing_never_runs_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran"
    with pytest.raises(MalformedLabels):
        parse_secondary_labels(f"[open({str(marker)!r}, 'w').close()]")
    assert not marker.exists()


def test_split_known_keeps_order_and_drops_duplicates():
    kept, dropped = split_known(["b", "xxx", "a", "b", "yyy"], {"a", "b"})
    assert kept == ["b", "a"]
    assert dropped == ["xxx", "yyy"]


def test_split_known_empty():
    assert split_known([], {"a"}) == ([], [])
    assert split_known(["a"], set()) == ([], ["a"])


def test_weak_target_values():
    index = {"a": 0, "b": 1, "c": 2, "d": 3}
    target = weak_target(["b"], ["a", "d"], index, 0.3)
    assert target.dtype == np.float32
    np.testing.assert_array_equal(target, np.array([0.3, 1.0, 0.0, 0.3], dtype=np.float32))


def test_weak_target_primary_wins_over_secondary():
    index = {"a": 0, "b": 1}
    for secondaries in (["a", "b"], ["b", "a"]):
        target = weak_target(["a"], secondaries, index, 0.5)
        np.testing.assert_array_equal(target, np.array([1.0, 0.5], dtype=np.float32))


def test_weak_target_zero_weight_and_several_positives():
    index = {"a": 0, "b": 1, "c": 2}
    np.testing.assert_array_equal(weak_target(["a", "c"], ["b"], index, 0.0), [1.0, 0.0, 1.0])
    assert math.isclose(weak_target([], ["c"], index, 0.7)[2], 0.7, rel_tol=1e-6)


# ------------------------------------------------------------------------------ the code form

@pytest.mark.parametrize("code, expected", [
    ("amerob", "amerob"), ("rocpig1", "rocpig"), (" amerob", "amerob"), ("amerob\t", "amerob"),
    ("\u00a0amerob\n", "amerob"),
])
def test_surrounding_whitespace_is_stripped(code, expected):
    assert normalize_code(code) == expected and is_code(expected)


@pytest.mark.parametrize("code", ["ame rob", "ame\trob", "AMEROB", "amérob", "amerob!", "", "ame-rob", "nocall",
                                  "amer\x00ob", "x" * 3 + "\u0661"])
def test_codes_outside_the_form_are_rejected(code):
    assert not is_code(normalize_code(code))
    with pytest.raises(MalformedLabels, match="not a species code"):
        parse_secondary_labels(repr([code]))


def test_messages_about_huge_cells_stay_short():
    with pytest.raises(MalformedLabels) as error:
        parse_secondary_labels("[" * 100000)
    assert len(str(error.value)) < 200
