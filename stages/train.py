"""Stage train@<model>: train one model of params.yaml `models` on the featurized chunks.

Writes `<out>/best.pt` (lowest valid loss) and, once complete, `<out>/last.pt`; DVCLive curves and a
summary to `<live>`. An interrupted run resumes after its last completed epoch with the same result
as an uninterrupted one (the rule: stages/training/loop.py; the step: stages/training/trainer.py).
With `train.processes` above 1 it starts that many data-parallel processes itself; under `torchrun`
it is one of them (stages/training/distributed.py).

    python -m stages.train --params params.yaml --model ast_tiny --prepared data/prepared \
        --features data/features --out models/ast_tiny --live reports/train/ast_tiny --resume-dir .resume \
        --background data/background
    torchrun --nnodes 2 --nproc-per-node 4 ... -m stages.train <the same arguments>
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core.cli import run
from stages.core.devices import resolve_device
from stages.core.params import load_params
from stages.models.pretrained import PretrainedWeightsNotFound
from stages.training.checkpoints import CheckpointError
from stages.training.distributed import WorldError, launch, resolve_processes, world_from_env
from stages.training.loop import TrainPaths, train_rank
from stages.training.trainer import Diverged


# Errors of training with a message the user can act on (on top of params and data errors, which
# stages/core/cli.py knows): printed without a traceback, by every rank.
USER_ERRORS = (CheckpointError, Diverged, PretrainedWeightsNotFound, WorldError)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True, help="a key of `models` in params.yaml")
    parser.add_argument("--prepared", type=Path, required=True)
    parser.add_argument("--features", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--live", type=Path, required=True)
    parser.add_argument("--resume-dir", type=Path, required=True,
                        help="where unfinished runs keep their state (git-ignored, not a DVC output)")
    parser.add_argument("--background", type=Path,
                        help="stage background's features: the noise train.background_probability mixes in")
    args = parser.parse_args()
    params = load_params(args.params, timm_archs=True)
    if args.model not in params.models:
        raise SystemExit(f"--model {args.model}: not a key of `models` in {args.params} "
                         f"(have: {', '.join(params.models)})")
    paths = TrainPaths(out=args.out, live=args.live, resume=args.resume_dir, background=args.background)
    run = (args.params, args.model, args.prepared, args.features, paths)
    processes = resolve_processes(params.train.processes, resolve_device(params.train.device))
    if world_from_env() is None and processes > 1:
        launch(processes, USER_ERRORS, train_rank, *run)
    else:
        train_rank(*run)


if __name__ == "__main__":
    run(main, *USER_ERRORS)
