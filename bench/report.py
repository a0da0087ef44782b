"""reports/bench.json (every figure) and reports/bench.md (the tables a person reads)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stages.core.atomic import write_json, write_text
from stages.reporting.tables import recipe_text

# Targets of the GPU-speed issue, printed beside the figures they judge.
TARGETS = {
    "featurize_speedup_vs_naive": ">= 5",
    "featurize_vs_decode_floor": "<= 2.5 (CPU), <= 1.3 (mel on a GPU)",
    "featurize_rss_ratio_largest_vs_1x": "< 1.2",
    "loader_samples_per_second": ">= 25,000 (CPU)",
    "loop_samples_per_second": "efficientnet_b0 >= 3,500, ast_tiny >= 4,000 (H100)",
}


def table(rows: list[dict], floatfmt: str = ",.2f") -> str:
    return pd.DataFrame(rows).to_markdown(index=False, floatfmt=floatfmt)


def featurize_md(f: dict) -> str:
    scales = [{"scale": f"{scale}x", "files": r["files"], "chunks": r["chunks"], "audio s": r["audio_seconds"],
               "wall s": r["wall_seconds"], "audio s per s": r["audio_seconds_per_second"],
               "ms per audio s": r["ms_per_audio_second"], "peak RSS main (MiB)": r["peak_rss_mib_main"],
               "peak RSS worker (MiB)": r["peak_rss_mib_largest_worker"]} for scale, r in f["scales"].items()]
    floor = f["decode_floor"]
    ratios = [
        {"figure": "featurize_speedup_vs_naive", "value": f["featurize_speedup_vs_naive"],
         "how": f"naive librosa path {f['naive_seconds']:.1f} s vs featurize {f['featurize_seconds']:.1f} s, "
                f"same {f['compared_at_scale']}x chunks",
         "target": TARGETS["featurize_speedup_vs_naive"]},
        {"figure": "featurize_vs_decode_floor", "value": f["featurize_vs_decode_floor"],
         "how": f"soundfile decode only, {floor['processes']} processes, {f['compared_at_scale']}x files: "
                f"{floor['audio_seconds_per_second']:,.0f} audio s per s", "target": TARGETS["featurize_vs_decode_floor"]},
        {"figure": "featurize_rss_ratio_largest_vs_1x", "value": f["featurize_rss_ratio_largest_vs_1x"],
         "how": "peak RSS of the main process, largest scale / 1x", "target": TARGETS["featurize_rss_ratio_largest_vs_1x"]},
    ]
    return f"## Featurize (mel on {f['device']})\n\n{table(scales)}\n\n{table(ratios)}\n"


def training_md(t: dict) -> str:
    head = (f"## Training data path and loop ({t['device']}, {t['chunks']} synthetic chunks of 128 x 501, "
            f"397 classes)\n\n"
            f"- data path alone (`BatchReader`, float16 delivered to the device, batch {t['batch_size']}): "
            f"**{t['loader_samples_per_second']:,.0f} samples/s** (target {TARGETS['loader_samples_per_second']}); "
            f"normalised on the device as well: {t['loader_normalised_samples_per_second']:,.0f} samples/s\n"
            "- `data_wait_share`: time the data path takes per sample / time the real loop takes per sample "
            "(an upper bound on the share of a step spent waiting for data)\n"
            "- `loop_efficiency`: the real loop (`Trainer.train_epoch`: reading, normalising, SpecAugment, "
            "mixup, step) / a bare forward + backward + optimizer step on tensors already on the device\n\n")
    rows = [{"model": name, "recipe": recipe_text(m["recipe"]),
             "bare step samples/s": m["bare_step_samples_per_second"],
             "real loop samples/s": m["loop_samples_per_second"], "loop_efficiency": m["loop_efficiency"],
             "data_wait_share": t["data_wait_share"][name],
             "inference samples/s": m["inference_samples_per_second"]} for name, m in t["models"].items()]
    return head + table(rows, floatfmt=",.3f") + "\n"


def gpu_md(g: dict | None) -> str:
    if g is None:
        return ("## GPU\n\nNot measured: torch saw no CUDA device on the machine that ran it. "
                "`python -m bench.run --sections gpu` on a CUDA machine fills this section.\n")
    parts = [f"## GPU: {g['device']} (bf16 matmul peak measured at {g['bf16_matmul_peak_tflops']:,.0f} TFLOP/s)\n",
             "Bare steps on device-resident tensors. Every row has cuDNN autotuning, the fused optimizer and "
             "TF32 on (as `auto` sets them on CUDA) except the `off` rows, which turn one of them off on the "
             "model's default recipe. `GPU busy`: share of wall time in which a kernel ran (profiler).\n"]
    rows = []
    for name, m in g["models"].items():
        for r in m["recipes"]:
            rows.append({"model": name, "recipe": r["recipe"], "batch": r["batch_size"],
                         "train samples/s": r["train_samples_per_second"],
                         "inference samples/s": r["inference_samples_per_second"],
                         "GPU busy": r["gpu_busy_share"], "peak MiB": r["peak_memory_mib"],
                         "train TFLOP/s": r["train_tflops"], "share of peak": r["share_of_peak"]})
    parts.append(table(rows))
    loops = []
    for name, m in g["models"].items():
        for which, loop in m["loops"].items():
            hours = loop["projected_50_epoch_hours"]
            loops.append({"model": name, "recipe": f"{which}: {recipe_text(loop['recipe'])}",
                          "real loop samples/s": loop["loop_samples_per_second"], "GPU busy": loop["gpu_busy_share"],
                          **{f"50 epochs, {n} GPU (h)": h for n, h in hours.items()},
                          "reference, RTX 2080 Ti (h)": m["reference_50_epoch_hours"]})
    parts.append(f"Real loop (`Trainer.train_epoch` over {g['loop_chunks']:,} chunks, which the batch does not "
                 f"divide) with the default and the fastest recipe. Projection at "
                 f"{g['birdclef_2021_train_chunks_per_epoch']:,} chunks per epoch (every train chunk of BirdCLEF "
                 "2021 at `max_chunks_per_recording: 12`), training steps only; more than one GPU assumes "
                 f"ideal scaling (not measured). Target: {TARGETS['loop_samples_per_second']}.\n\n"
                 f"{table(loops)}")
    return "\n\n".join(parts) + "\n"


def predict_md(p: dict) -> str:
    rows = []
    for name, m in p["models"].items():
        for backend in ("torch", "onnx"):
            r = m[backend]
            projected = f"projected {p['hidden_test_windows']:,} windows (min)"
            rows.append({"model": name, "backend": backend, "windows/s": r["windows_per_second"],
                         projected: r["projected_hidden_test_minutes"],
                         "ONNX / torch": f"{m['onnx_speedup_vs_torch']:.2f}x" if backend == "onnx" else "",
                         "faster": "yes" if m["faster_backend"] == backend else ""})
    memory = p["memory"]
    return (f"## Predict (CPU, {p['threads']} threads, batch {p['batch_size']}, {p['classes']} classes)\n\n"
            "End to end, as `python -m stages.predict` runs: decode + log-mel + network + the submission table, "
            f"over {p['files']} soundscapes of {p['file_seconds']} s, after one warm-up file. Projection: BirdCLEF "
            f"2021's hidden test, {p['hidden_test_windows']:,} windows (80 soundscapes of 10 minutes). Targets: "
            "every model under 10 minutes with its faster backend; ONNX Runtime >= 1.3x torch eager.\n\n"
            f"{table(rows)}\n\n"
            f"Memory (`{memory['model']}`, ONNX backend, `python -m stages.predict` in its own process): peak RSS "
            f"{memory['short_peak_rss_mib']:,.0f} MiB on a {memory['short_file_seconds']:,} s file, "
            f"{memory['long_peak_rss_mib']:,.0f} MiB on a {memory['long_file_seconds']:,} s file: "
            f"**{memory['long_vs_short_rss_ratio']:.3f}x** (windows are streamed).\n")


def machine_line(section: str, run: dict) -> str:
    m = run["machine"]
    return (f"- `{section}`: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}; torch {m['torch']}, "
            f"Python {m['python']}; {run['seconds']:.0f} s")


def write_reports(results: dict, out: Path) -> None:
    sections = [name for name in ("featurize", "training", "gpu", "predict") if f"{name}_run" in results]
    header = ("# Benchmark (`make bench`)\n\n"
              + ("**Smoke run: toy sizes, the figures mean nothing.**\n\n" if results["smoke"] else "")
              + "Each section's figures come from one run on one machine (ratios are taken within a run); "
                "`bench.json` beside this file has them all.\n\n"
              + "\n".join(machine_line(name, results[f"{name}_run"]) for name in sections) + "\n")
    writers = {"featurize": featurize_md, "training": training_md, "gpu": gpu_md, "predict": predict_md}
    body = [header, *(writers[name](results[name]) for name in sections)]
    write_json(out / "bench.json", results)
    write_text(out / "bench.md", "\n".join(body))
