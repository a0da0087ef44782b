"""params.yaml, validated once into typed, frozen objects.

Every stage calls `load_params()` first; a mistake stops it before any work with one ParamsError naming
the file and the full key path, e.g. `params.yaml: models.ast_tiny.lr_scale: must be > 0` or
`params.yaml: evaluate.threshold_grid[2]: must be < 1`. The rules are declared with pydantic (types,
`Field` bounds, `Literal` choices, a few cross-field checks) rather than hand-written; the sections are
pydantic dataclasses, not BaseModels, so `dataclasses.replace` (bench/) still works, and re-validates.
Rules that span sections (the STFT window against the sample rate; a model's options against the
spectrogram it will get) are checked right after, by `check_across_sections`, so that a bad AST
option stops the first stage too, not the training stage after the data stages have run. Whether an
arch that is not ours exists is timm's to say: the stages that build models ask it (`timm_archs`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_type_hints

import yaml
from pydantic import BeforeValidator, Field, StrictBool, StrictInt, StrictStr, TypeAdapter, ValidationError

from stages.core.param_types import (AutoOrCount, Count, Device, Fraction, NonNegative, Number, Open01,
                                     Positive, SampleRate, either, rule, section)
from stages.models.ast_options import OptionError
from stages.models.registry import MODELS, UnknownArch, check_arch


class ParamsError(ValueError):
    """A value in params.yaml is missing, unknown or out of range."""



@section
class DemoParams:
    n_species: Annotated[StrictInt, Field(ge=2)]
    recordings_per_species: Annotated[StrictInt, Field(ge=2)]
    min_recording_seconds: Positive
    max_recording_seconds: Number
    short_recording_fraction: Fraction
    calls_per_10_seconds: Positive
    secondary_label_fraction: Fraction
    odd_format_fraction: Fraction
    n_soundscapes: Count
    n_test_soundscapes: Annotated[StrictInt, Field(ge=0)]
    soundscape_seconds: Annotated[StrictInt, Field(ge=10, multiple_of=5)]
    soundscape_nocall_fraction: Fraction
    noise_level: NonNegative
    n_background_files: Annotated[StrictInt, Field(ge=0)]  # noise clips with no bird, for train.background
    background_seconds: Positive
    sample_rate: SampleRate

    _cross = rule("min_recording_seconds", "must be <= max_recording_seconds",
                   lambda s: s.min_recording_seconds <= s.max_recording_seconds)


@section
class DataParams:
    root: StrictStr
    sample_rate: SampleRate
    chunk_seconds: Positive
    hop_seconds: Positive
    max_chunks_per_recording: Count
    min_remainder_seconds: Positive
    secondary_label_weight: Fraction
    min_rating: Number
    valid_fraction: Open01
    strict: StrictBool

    _cross = rule("min_remainder_seconds", "must be <= chunk_seconds",
                   lambda s: s.min_remainder_seconds <= s.chunk_seconds)

    @property
    def chunk_samples(self) -> int:
        return round(self.chunk_seconds * self.sample_rate)


@section
class FeatureParams:
    n_mels: Annotated[StrictInt, Field(ge=8)]
    n_fft: StrictInt
    win_ms: Positive
    hop_ms: Positive
    fmin: NonNegative
    fmax: Number
    batch_size: Count
    workers: Annotated[StrictInt, Field(ge=0)]
    device: Device

    _cross = rule("fmin", "must be < fmax", lambda s: s.fmin < s.fmax)

    def hop_length(self, sample_rate: int) -> int:
        return round(sample_rate * self.hop_ms / 1000)

    def win_length(self, sample_rate: int) -> int:
        return round(sample_rate * self.win_ms / 1000)

    def frames_per_chunk(self, chunk_samples: int, sample_rate: int) -> int:
        return n_frames(chunk_samples, self.hop_length(sample_rate))


def n_frames(n_samples: int, hop_length: int) -> int:
    # MelSpectrogram pads by n_fft // 2 on both sides (center=True): one frame per hop, plus one.
    return n_samples // hop_length + 1


@section
class TrainParams:
    epochs: Count
    batch_size: Count
    warmup_epochs: NonNegative                       # linear lr warm-up, then cosine decay per step
    optimizer: Literal["adam", "adamw"]
    weight_decay: NonNegative
    mixup_alpha: NonNegative                         # 0 disables mixup
    freq_mask: Annotated[StrictInt, Field(ge=0)]
    time_mask: Annotated[StrictInt, Field(ge=0)]
    device: Device
    precision: Literal["auto", "fp32", "bf16", "fp16"]
    channels_last: Annotated[bool | str, either(lambda v: v == "auto" or type(v) is bool,
                                                 "must be auto, true or false")]
    compile: StrictBool
    threads: AutoOrCount
    processes: AutoOrCount
    ema_decay: Annotated[Number, Field(ge=0, lt=1)]  # 0 disables the weight average
    chunks_per_recording: Annotated[int | str, either(lambda v: v == "all" or (type(v) is int and v >= 1),
                                                      "must be all or an integer >= 1")]
    time_shift_frames: Annotated[StrictInt, Field(ge=0)]  # 0 disables the shift
    background: Annotated[StrictStr, Field(min_length=1)]  # a folder of bird-free audio (stage background)
    background_probability: Fraction                       # 0 disables mixing
    background_snr_db: Annotated[list[Number], Field(min_length=2, max_length=2)]
    nocall_probability: Fraction                           # chunks replaced by background alone, no targets

    # = epochs: the whole run warms up (a 1-epoch smoke test with the default warm-up still runs).
    _cross = rule("warmup_epochs", "must be <= epochs", lambda s: s.warmup_epochs <= s.epochs)
    _snr = rule("background_snr_db", "must be [low, high] with low <= high",
                lambda s: s.background_snr_db[0] <= s.background_snr_db[1])
    _shares = rule("nocall_probability", "plus background_probability must be <= 1",
                   lambda s: s.nocall_probability + s.background_probability <= 1)

    @property
    def uses_background(self) -> bool:
        return self.background_probability > 0 or self.nocall_probability > 0


@section
class ModelParams:
    arch: StrictStr
    lr_scale: Positive
    pretrained: Annotated[bool | str, either(lambda v: type(v) is bool or (type(v) is str and v != ""),
                                              "expected true, false or a file path")]
    options: Annotated[dict, BeforeValidator(lambda v: {} if v is None else v)]  # the model's business


@section
class EvaluateParams:
    batch_size: Count
    tune_fraction: Open01
    bootstrap_samples: Annotated[StrictInt, Field(ge=10, le=100_000)]  # memory: samples x windows
    confidence_level: Open01
    threshold_grid: Annotated[list[Open01], Field(min_length=1)]


@section
class PredictParams:
    backend: Literal["onnx", "torch"]
    batch_size: Count
    threads: AutoOrCount


@section
class Params:
    # numpy and torch both take it; per-epoch seeds (seed * 1000 + epoch, plus a stride per data-parallel
    # rank) stay far below torch's 64-bit limit.
    seed: Annotated[StrictInt, Field(ge=0, le=2**31 - 1)]
    lr: Positive
    demo: DemoParams
    data: DataParams
    features: FeatureParams
    train: TrainParams
    models: Annotated[dict[str, ModelParams], Field(min_length=1)]
    evaluate: EvaluateParams
    predict: PredictParams

    def effective_lr(self, model_name: str) -> float:
        return self.lr * self.models[model_name].lr_scale


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (DVC refuses such a file; the
    stages would silently take the last value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice in one section; keep one", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_params(path: str | Path = "params.yaml", timm_archs: bool = False) -> Params:
    """params.yaml validated; `timm_archs`: also ask timm whether every arch that is not one of our
    own models exists. Only the stages that build models ask: importing timm (and torch) takes about
    3 s, which every data stage would otherwise pay for a setting it never reads."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found; run from the project root or pass --params") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    try:
        return parse_params(raw, timm_archs)
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None


def parse_params(raw: Any, timm_archs: bool = False) -> Params:
    try:
        params = _ADAPTER.validate_python(raw)
    except ValidationError as err:
        # An unknown key first (it often explains a `missing` one), then a missing key, then the rest.
        rank = {"unexpected_keyword_argument": 0, "missing": 1}
        first = min(err.errors(), key=lambda error: rank.get(error["type"], 2))
        raise ParamsError(_describe(first)) from None
    check_across_sections(params)
    if timm_archs:
        check_timm_archs(params)
    return params


def check_timm_archs(params: Params) -> None:
    for name, model in params.models.items():
        try:
            check_arch(model.arch)
        except UnknownArch as err:
            raise ParamsError(f"models.{name}.arch: {err}") from None


def check_across_sections(params: Params) -> None:
    """The rules no single section can check; ParamsError naming the key at fault."""
    for name in params.models:
        if not MODEL_NAME.fullmatch(name):
            raise ParamsError(f"models: the model name {name!r} may hold only letters, digits, '_', '.' and '-' "
                              "(it becomes a DVC stage name, a folder and a command-line argument); rename it")
    fp, sample_rate = params.features, params.data.sample_rate
    if fp.win_length(sample_rate) > fp.n_fft:
        raise ParamsError(f"features.win_ms: a {fp.win_ms} ms window is {fp.win_length(sample_rate)} "
                          f"samples, longer than features.n_fft ({fp.n_fft})")
    if fp.fmax > sample_rate / 2:
        raise ParamsError(f"features.fmax: {fp.fmax} Hz is above the Nyquist frequency "
                          f"({sample_rate / 2} Hz) of data.sample_rate")
    if params.data.chunk_samples < fp.n_fft:
        raise ParamsError(f"data.chunk_seconds: a {params.data.chunk_seconds} s chunk is {params.data.chunk_samples} "
                          f"samples, shorter than one STFT window (features.n_fft = {fp.n_fft}); lengthen it")
    frames = fp.frames_per_chunk(params.data.chunk_samples, sample_rate)
    # A mask as wide as the input can blank a whole chunk (the model then learns from zeros); a shift
    # as long as the chunk wraps it round to where it started.
    tp = params.train
    for key, width, size, what in (("time_mask", tp.time_mask, frames, "a mask of up to {} can cover"),
                                   ("time_shift_frames", tp.time_shift_frames, frames, "a shift of up to {} spans"),
                                   ("freq_mask", tp.freq_mask, fp.n_mels, "a mask of up to {} can cover")):
        if width >= size:
            unit = "mel bands" if key == "freq_mask" else "frames of a chunk"
            raise ParamsError(f"train.{key}: {what.format(width)} all {size} {unit}; keep it below {size} "
                              "(0 disables it)")
    for name, model in params.models.items():
        spec = MODELS.get(model.arch)
        if spec is None:
            continue  # a timm CNN (see check_timm_archs): its options are timm keywords, checked when built
        try:
            spec.parse_options(model.options, fp.n_mels, frames)
        except OptionError as err:
            raise ParamsError(f"models.{name}.options.{err.key}: {err.message}") from None


# A model name ends up in stage names, paths and the shell commands of dvc.yaml: nothing a shell reads.
MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_ADAPTER = TypeAdapter(Params)
_MESSAGES = {  # pydantic's error types in this project's words; others keep pydantic's message
    "missing": "missing", "value_error": "{error}", "literal_error": "must be one of {expected}",
    "greater_than": "must be > {gt}", "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}", "less_than_equal": "must be <= {le}",
    "int_type": "expected an integer, got {input!r}", "bool_type": "expected true or false, got {input!r}",
    "dict_type": "expected a mapping, got {input!r}", "dataclass_type": "expected a mapping, got {input!r}",
}


def _describe(error: dict) -> str:
    loc = (*error["loc"], *([error["ctx"]["field"]] if error["type"] == "params" else []))
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    if error["type"] == "unexpected_keyword_argument":
        return f"{key}: unknown key (allowed: {', '.join(_fields_at(loc[:-1]))})"
    template = _MESSAGES.get(error["type"])
    message = template.format(input=error["input"], **error.get("ctx", {})) if template else error["msg"]
    return f"{key or 'top level'}: {message}"


def _fields_at(loc: tuple) -> list[str]:
    """The keys allowed in the section at `loc`, e.g. ("models", "ast_tiny") -> ModelParams's fields."""
    node: Any = Params
    for part in loc:
        node = get_type_hints(node)[part] if dataclasses.is_dataclass(node) else get_args(node)[1]  # dict[str, X]
    return [field.name for field in dataclasses.fields(node)]
