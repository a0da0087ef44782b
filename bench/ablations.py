"""`make ablations`: two queued DVC experiment sets, the training recipe's and the AST variants'.

Each experiment is a `dvc exp run --queue` with `-S` overrides, run with `dvc queue start -j N`, then
tabulated from `dvc exp show --json`:

- recipe (bench/recipe_variants.py): random crops, background noise and weight averaging, each alone
  and all together, for both models -> reports/recipe_ablations.md and .png (soundscape F1 with its
  interval beside the all-nocall baseline, predicted and true nocall share, seconds per epoch).
- ast: the reference's open question 2 -> reports/ablations.md and .png (one row / bar per
  experiment: parameters, valid mAP, soundscape F1 and its interval, min valid loss, seconds per epoch).

The AST variants:

- Patch shape: the paper's 16x16 patches at stride 10 against tall, time-preserving patches that
  span the full mel height and 4 frames (no overlap), one token per 40 ms.
- Patchout (PaSST): on or off for each shape.
- Position-embedding fitting (bilinear / nearest / reinit) only changes how ImageNet's 14x14 DeiT
  grid is fitted, so with random weights these variants are the same model: they run only when
  --weights names a DeiT checkpoint (models.ast_tiny.pretrained).
- Position-embedding initialisation, with random weights only: the 2-D sine-cosine code every other
  variant starts from, against the official code's small random values (16x16 patches; a tall grid
  has a single frequency row, so there the two differ only along time).

The EfficientNet stages are unaffected by these overrides, so DVC's run-cache restores them.

    python -m bench.ablations --out reports [--sets recipe,ast] [--jobs 2] [--weights path/to/deit_tiny.pth]
    python -m bench.ablations --out reports --sets ast --collect-from <commit>   # tabulate only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import pandas as pd

from bench.ablation_report import write_recipe_report, write_report
from bench.recipe_variants import recipe_rows, recipe_variants
from stages.core.params import load_params

AST = "models.ast_tiny"
PATCH_SHAPES = {  # name -> options overrides
    "16x16-s10": {"patch_freq": 16, "patch_time": 16, "fstride": 10, "tstride": 10},
    "tall-{n_mels}x4": {"patch_freq": "{n_mels}", "patch_time": 4, "fstride": "{n_mels}", "tstride": 4},
}
# A tall grid has a single frequency row, which patchout cannot drop; time columns it can.
PATCHOUT = {"16x16-s10": {"patchout_freq": 0.1, "patchout_time": 0.25},
            "tall-{n_mels}x4": {"patchout_freq": 0.0, "patchout_time": 0.25}}
NO_PATCHOUT = {"patchout_freq": 0.0, "patchout_time": 0.0}
POS_EMBED = ("bilinear", "nearest", "reinit")
DEFAULT_INIT, OFFICIAL_INIT = "sincos", "trunc_normal"  # pos_embed_init without ImageNet weights
PREFIX = "abl-"
POLL_SECONDS = 10


def variants(n_mels: int, weights: str | None) -> dict[str, dict[str, object]]:
    """Experiment name -> `-S` overrides."""
    found = {}
    for shape, options in PATCH_SHAPES.items():
        shape_name = shape.format(n_mels=n_mels)
        base = {k: int(str(v).format(n_mels=n_mels)) for k, v in options.items()}
        fits = POS_EMBED if weights else ("bilinear",)
        for fit in fits:
            for patchout_name, patchout in (("", NO_PATCHOUT), ("-patchout", PATCHOUT[shape])):
                if patchout_name and fit != "bilinear":
                    continue  # patchout is compared at the default fitting only
                name = f"{PREFIX}{shape_name}{'-' + fit if weights else ''}{patchout_name}"
                overrides = {**base, **patchout, "pos_embed_interp": fit, "pos_embed_init": DEFAULT_INIT}
                found[name] = _settings(overrides, weights)
    if not weights:  # the paper's patches again, started as the official code starts them
        found[f"{PREFIX}16x16-s10-{OFFICIAL_INIT.replace('_', '-')}"] = {
            **found[f"{PREFIX}16x16-s10"], f"{AST}.options.pos_embed_init": OFFICIAL_INIT}
    return found


def _settings(options: dict[str, object], weights: str | None) -> dict[str, object]:
    return {**{f"{AST}.options.{k}": v for k, v in options.items()}, f"{AST}.pretrained": weights or False}


def dvc(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["dvc", *args], capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def queue_and_run(experiments: dict[str, dict], jobs: int, timeout_s: float) -> None:
    dvc("exp", "remove", *experiments, check=False)  # re-running the set replaces its experiments
    for name, overrides in experiments.items():
        sets = [arg for key, value in overrides.items() for arg in ("-S", f"{key}={_yaml(value)}")]
        dvc("exp", "run", "--queue", "-n", name, *sets)
        print(f"queued {name}", flush=True)
    # Each run gets its share of the cores: oversubscribed torch threads stall (README, Guarantees).
    threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    dvc("queue", "start", "-j", str(jobs), env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    deadline = time.monotonic() + timeout_s
    while (status := dvc("queue", "status").stdout) and any(s in status for s in ("Queued", "Running")):
        if time.monotonic() > deadline:
            raise SystemExit(f"ablations still running after {timeout_s:.0f} s:\n{status}")
        time.sleep(POLL_SECONDS)
    failed = [line.split()[1] for line in status.splitlines() if "Failed" in line]
    for name in failed:
        print(dvc("queue", "logs", name, check=False).stdout[-4000:])
    if failed:
        raise SystemExit(f"ablation experiments failed: {failed} (logs above)")


def _yaml(value: object) -> str:
    return "false" if value is False else str(value)


def head_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def collect(names: list[str], rows_of, baseline: str) -> pd.DataFrame:
    """The rows `rows_of(name, data)` gives for each named experiment derived from `baseline`, the
    commit they were queued from (a commit made while they ran moves HEAD away from them)."""
    found = {}
    for entry in _walk(json.loads(dvc("exp", "show", "--json", "--rev", baseline).stdout)):
        if entry.get("name") in names and entry.get("data"):
            found[entry["name"]] = rows_of(entry["name"], entry["data"])
    missing = [name for name in names if name not in found]
    if missing:
        raise SystemExit(f"`dvc exp show --json --rev {baseline}` has no results for {missing}")
    return pd.DataFrame([row for name in names for row in found[name]])


def _walk(node):
    if isinstance(node, dict):
        yield node
        node = list(node.values())
    if isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _rows(name: str, data: dict) -> list[dict]:
    return [_row(name, data)]


def _row(name: str, data: dict) -> dict:
    params = data["params"]["params.yaml"]["data"]["models"]["ast_tiny"]
    scores = data["metrics"]["reports/scores.json"]["data"]["ast_tiny"]
    timing = data["metrics"]["reports/timing.json"]["data"]["ast_tiny"]
    soundscape = data["metrics"]["reports/soundscape.json"]["data"]["ast_tiny"]
    options = params["options"]
    return {"experiment": name, "patch": f"{options['patch_freq']}x{options['patch_time']}",
            "stride": f"{options['fstride']}x{options['tstride']}",
            "patchout": f"{options['patchout_freq']}/{options['patchout_time']}",
            "pos_embed": options["pos_embed_interp"] if params["pretrained"] else f"random: {options['pos_embed_init']}",
            "params": scores["params"], "valid_mAP": scores["mAP"], "soundscape_F1": scores["F1"],
            "F1_low": soundscape["F1_low"], "F1_high": soundscape["F1_high"],
            "F1_all_nocall": soundscape["F1_all_nocall"], "min_valid_loss": scores["loss"],
            "s_per_epoch": timing["s_epoch"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--sets", default="recipe,ast", help="comma-separated, of recipe,ast")
    parser.add_argument("--jobs", type=int, default=1, help="experiments run at once (dvc queue start -j)")
    parser.add_argument("--weights", help="a DeiT-tiny checkpoint: also run the position-embedding variants")
    parser.add_argument("--timeout", type=float, default=6 * 3600, help="seconds to wait for the queue")
    parser.add_argument("--collect-from", metavar="COMMIT",
                        help="run nothing: tabulate the set's experiments already run from COMMIT")
    args = parser.parse_args()
    sets = args.sets.split(",")
    if not set(sets) <= {"recipe", "ast"}:
        raise SystemExit(f"--sets {args.sets}: choose from recipe, ast")
    params = load_params(args.params, timm_archs=True)
    experiments = {"recipe": recipe_variants() if "recipe" in sets else {},
                   "ast": variants(params.features.n_mels, args.weights) if "ast" in sets else {}}
    baseline, seconds_per_experiment = args.collect_from, None  # collected only: the time is unknown
    if baseline is None:
        baseline, started = head_commit(), time.monotonic()
        queue_and_run({**experiments["recipe"], **experiments["ast"]}, args.jobs, args.timeout)
        seconds_per_experiment = (time.monotonic() - started) / sum(map(len, experiments.values()))
    seconds = {name: None if seconds_per_experiment is None else seconds_per_experiment * len(set_)
               for name, set_ in experiments.items()}
    if experiments["recipe"]:
        table = collect(list(experiments["recipe"]), recipe_rows, baseline)
        write_recipe_report(table, args.out, seconds=seconds["recipe"])
        print(table.to_string(index=False))
    if experiments["ast"]:
        table = collect(list(experiments["ast"]), _rows, baseline)
        write_report(table, args.out, pretrained=bool(args.weights), seconds=seconds["ast"])
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
