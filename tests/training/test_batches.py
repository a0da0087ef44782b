"""The batched data path (stages/training/batches.py) and the device-side transforms
(stages/training/augment.py), each checked against an independent per-item computation on a real float16 memmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from stages.training.augment import Normalise, SpecAugment, mixup
from stages.training.batches import BatchReader
from stages.birdclef.prepared import SplitData

N_ROWS, N_MELS, N_FRAMES, N_CLASSES = 40, 16, 30, 5
MEAN, STD = -3.25, 2.5


@pytest.fixture()
def memmap(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "features.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(N_ROWS, N_MELS, N_FRAMES))
    array[:] = rng.normal(MEAN, STD, array.shape).astype(np.float16)
    array.flush()
    return path


def split_of(rows: list[int]) -> SplitData:
    """A split made of some feature rows (not contiguous, not sorted), each with its own target."""
    rows_array = np.asarray(rows, dtype=np.int64)
    targets = np.zeros((len(rows), N_CLASSES), dtype=np.float32)
    targets[np.arange(len(rows)), rows_array % N_CLASSES] = 1.0
    targets[:, 0] += 0.25  # a soft secondary label on every row, so targets differ from one-hots
    return SplitData(rows_array, targets, pd.DataFrame({"item_id": [f"chunk{r}" for r in rows]}))


SPLIT_ROWS = [37, 2, 9, 31, 4, 18, 25, 11, 0, 39, 22, 7, 15]


def per_item(memmap: Path, split: SplitData, position: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference path: one row, converted to float32 and normalised by hand."""
    row = np.load(memmap, mmap_mode="r")[split.feature_rows[position]].astype(np.float32)
    return (row - np.float32(MEAN)) / np.float32(2 * STD), split.targets[position]


def test_batches_cover_the_order_once_with_the_right_rows_and_targets(memmap):
    split = split_of(SPLIT_ROWS)
    reader = BatchReader(memmap, split, batch_size=4, device=torch.device("cpu"))
    order = np.random.default_rng(1).permutation(len(SPLIT_ROWS))
    batches = list(reader.batches(order))
    assert len(batches) == len(reader) == 4  # 13 chunks in batches of 4: 4, 4, 4, 1
    assert [len(b.positions) for b in batches] == [4, 4, 4, 1]
    seen = np.concatenate([b.positions for b in batches])
    assert sorted(seen.tolist()) == list(range(len(SPLIT_ROWS)))
    features = np.load(memmap, mmap_mode="r")
    for number, batch in enumerate(batches):
        # Each batch holds the chunks its slice of `order` names, its rows read in ascending order.
        assert set(batch.positions.tolist()) == set(order[4 * number:4 * number + 4].tolist())
        rows = split.feature_rows[batch.positions]
        assert (np.diff(rows) > 0).all()
        assert batch.x.dtype == torch.float16 and batch.y.dtype == torch.float32
        np.testing.assert_array_equal(batch.x.numpy(), features[rows])
        np.testing.assert_array_equal(batch.y.numpy(), split.targets[batch.positions])


def test_normalised_batches_equal_the_per_item_path(memmap):
    split = split_of(SPLIT_ROWS)
    reader = BatchReader(memmap, split, batch_size=5, device=torch.device("cpu"))
    normalise = Normalise(MEAN, STD)
    for batch in reader.batches(np.arange(len(SPLIT_ROWS))[::-1].copy()):
        x = normalise(batch.x)
        assert x.dtype == torch.float32
        for k, position in enumerate(batch.positions):
            expected_x, expected_y = per_item(memmap, split, position)
            np.testing.assert_allclose(x[k].numpy(), expected_x, rtol=0, atol=1e-6)
            np.testing.assert_array_equal(batch.y[k].numpy(), expected_y)
    # The factor 2 of the official AST scaling: a value one std above the mean becomes 0.5.
    assert normalise(torch.tensor([MEAN + STD], dtype=torch.float16)).item() == pytest.approx(0.5)


def test_default_order_is_the_split_order(memmap):
    split = split_of(SPLIT_ROWS)
    reader = BatchReader(memmap, split, batch_size=64, device=torch.device("cpu"))
    (batch,) = list(reader.batches())
    assert sorted(batch.positions.tolist()) == list(range(len(SPLIT_ROWS)))


def test_an_empty_split_gives_no_batch(memmap):
    reader = BatchReader(memmap, split_of([]), batch_size=4, device=torch.device("cpu"))
    assert len(reader) == 0 and list(reader.batches()) == []


def test_a_split_beyond_the_feature_file_is_refused(memmap):
    with pytest.raises(ValueError, match="re-run `dvc repro featurize`"):
        BatchReader(memmap, split_of([0, N_ROWS]), batch_size=4, device=torch.device("cpu"))


def test_spec_augment_masks_one_band_and_one_span_within_bounds():
    torch.manual_seed(0)
    freq_mask, time_mask = 6, 9
    x = torch.rand(64, N_MELS, N_FRAMES) + 1.0  # no zeros before masking
    masked = SpecAugment(freq_mask, time_mask)(x)
    zero = masked == 0
    assert (masked[~zero] == x[~zero]).all()  # everything not masked is untouched
    widths_seen = set()
    for example in zero:
        rows = example.all(dim=1).nonzero().flatten()       # fully masked mel bins
        columns = example.all(dim=0).nonzero().flatten()    # fully masked frames
        for band, limit in ((rows, freq_mask), (columns, time_mask)):
            assert len(band) <= limit
            if len(band):
                assert (band.diff() == 1).all()  # one contiguous band
        # Every zero lies in the masked band or span.
        expected = torch.zeros_like(example)
        expected[rows, :] = True
        expected[:, columns] = True
        assert (example == expected).all()
        widths_seen.add((len(rows), len(columns)))
    assert len(widths_seen) > 10  # masks differ from example to example


def test_augmentation_is_reproducible_from_the_seed():
    x, y = torch.rand(8, N_MELS, N_FRAMES), torch.rand(8, N_CLASSES)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(mixup(SpecAugment(4, 5)(x), y, alpha=0.4))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_mixup_mixes_inputs_and_targets_with_one_weight():
    torch.manual_seed(3)
    x = torch.arange(4, dtype=torch.float32).reshape(4, 1, 1).expand(4, 2, 2).contiguous()
    y = torch.eye(4)
    mixed_x, mixed_y = mixup(x, y, alpha=0.4)
    # Each mixed target is lam * one-hot(i) + (1 - lam) * one-hot(perm[i]); the input follows.
    for i in range(4):
        weights = mixed_y[i]
        assert weights.sum().item() == pytest.approx(1.0)
        assert mixed_x[i, 0, 0].item() == pytest.approx((weights * torch.arange(4.0)).sum().item())
    assert mixup(x, y, alpha=0.0) == (x, y)
