"""Stage export@<model>: write model.onnx into a model bundle, checked against PyTorch.

    python -m stages.export --model models/efficientnet_b0 --features data/features

The check runs both runtimes on real feature rows (evenly spread over `--features`, featurize's
output for the same settings) and refuses the export above MAX_LOGIT_DIFF (stages/inference/export.py).
`python -m stages.predict --backend onnx` then needs ONNX Runtime instead of torch and timm for the
network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stages.audio.store import FEATURES_FILE
from stages.core.cli import run
from stages.inference.bundle import ONNX_FILE, BundleError, read_bundle
from stages.inference.export import CHECK_ROWS, ExportError, export_onnx
from stages.training.checkpoints import CheckpointError


def check_rows(features_dir: Path, count: int) -> np.ndarray:
    """`count` rows spread evenly over features.npy (rows of files featurize skipped are zeros: any row
    is a valid input)."""
    path = features_dir / FEATURES_FILE
    try:
        features = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise ExportError(f"{path}: missing or unreadable ({err}); run `dvc repro featurize` first") from None
    picks = np.unique(np.linspace(0, len(features) - 1, min(count, len(features))).round().astype(int))
    return np.asarray(features[picks])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a bundle folder (models/<model>)")
    parser.add_argument("--features", type=Path, default=Path("data/features"),
                        help="featurize's output: the rows the export is checked on")
    args = parser.parse_args()
    bundle = read_bundle(args.model)
    report = export_onnx(bundle, check_rows(args.features, CHECK_ROWS))
    print(f"export: {bundle.folder / ONNX_FILE} (opset {report.opset}); max |logit diff| against PyTorch "
          f"{report.max_abs_logit_diff:.2e} on {report.rows_checked} feature rows (allowed {report.tolerance:g})",
          flush=True)


if __name__ == "__main__":
    run(main, BundleError, CheckpointError, ExportError)
