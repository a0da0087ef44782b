"""Benchmark: training and inference throughput of each model on one device, in one run.

Prints samples/s for a forward+backward+Adam step and for inference on random 128 x 501
spectrograms, for both models and AST with PaSST-style patchout, so ratios compare like with like:

    PYTHONPATH=. python tests/benchmarks/model_speed.py [--batch 16] [--steps 5] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from stages.devices import resolve_device
from stages.models import count_parameters, create_model

CONFIGS = [
    ("efficientnet_b0", "efficientnet_b0", {}),
    ("ast_tiny", "ast_tiny", {}),
    ("ast_tiny patchout t=0.5", "ast_tiny", {"patchout_time": 0.5}),
    ("ast_tiny patchout f=0.25 t=0.5", "ast_tiny", {"patchout_freq": 0.25, "patchout_time": 0.5}),
]


def throughput(model, x, y, steps: int, train: bool) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train(train)
    for step in range(steps + 1):  # the first step warms up kernels and allocators
        if step == 1:
            if x.is_cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
        if train:
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            with torch.no_grad():
                model(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return steps * len(x) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--classes", type=int, default=397)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 128, 501, device=device)
    y = torch.rand(args.batch, args.classes, device=device)
    print(f"device {device}, batch {args.batch}, {args.steps} timed steps, torch {torch.__version__}")
    print(f"{'model':<32} {'params':>10} {'train samples/s':>16} {'infer samples/s':>16}")
    for label, arch, options in CONFIGS:
        model = create_model(arch, args.classes, 128, 501, False, options).to(device)
        train_rate = throughput(model, x, y, args.steps, train=True)
        infer_rate = throughput(model, x, y, args.steps, train=False)
        print(f"{label:<32} {count_parameters(model)[0]:>10,} {train_rate:>16.1f} {infer_rate:>16.1f}")


if __name__ == "__main__":
    main()
