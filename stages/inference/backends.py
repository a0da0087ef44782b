"""The two backends of stage predict, each with everything it runs on: the scorer, the log-mel front
end and the resampling filter.

- `torch`: the PyTorch network with featurize's own front end (`CpuLogMel`, torchaudio's
  resampler), so that it reproduces evaluate's scores exactly;
- `onnx`: model.onnx in ONNX Runtime with the numpy front end (stages/audio/numpy_dsp.py), within
  float32 rounding of the torch one, importing neither torch nor timm.

Each backend imports its runtime when chosen (below, inside the functions), so that the ONNX one
runs where torch is not installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stages.inference.bundle import Bundle

BACKENDS = ("torch", "onnx")


@dataclass(frozen=True)
class Backend:
    name: str
    scorer: Callable[[Bundle], Callable]   # bundle -> scores(float32 log-mels) -> sigmoid scores
    log_mel: type                           # (MelSettings, sample_rate) -> waves -> log-mels
    make_filter: Callable                   # (source_rate, sample_rate) -> resampling filter


def load_backend(name: str, threads: int, device: str, batch_size: int) -> Backend:
    """Backend `name` (of BACKENDS) with `threads` CPU threads; `device`: the torch backend's."""
    if name == "onnx":
        from stages.audio.numpy_dsp import NumpyLogMel, SincResampler
        from stages.inference.onnx_scorer import OnnxScorer
        return Backend(name, lambda bundle: OnnxScorer(bundle, threads), NumpyLogMel, SincResampler)
    import torch

    from stages.audio.decode import TorchaudioFilter
    from stages.audio.logmel import CpuLogMel
    from stages.core.devices import resolve_device
    from stages.inference.torch_scorer import TorchScorer
    torch.set_num_threads(threads)
    torch_device = resolve_device(device)
    return Backend(name, lambda bundle: TorchScorer(bundle, torch_device, batch_size), CpuLogMel, TorchaudioFilter)
