"""Run configuration: YAML -> frozen typed dataclasses, dotted overrides, one validation.

A config file has the sections below (every key optional except ``model.name`` and
``data.root``; unknown keys are errors that list the valid ones)::

    model:    name, num_classes, pretrained, overrides
    data:     root, img_size, train_split, num_workers, image_interpolation
    augment:  enabled, p_rot_flip, p_rotate, max_angle
    train:    batch_size, max_epochs, max_iterations, seed, amp, channels_last, deterministic,
              checkpoint_every_iterations, device, cpu_threads
    optim:    name, lr, momentum, nesterov, weight_decay, betas, eps, no_decay_norm_bias,
              grad_clip
    schedule: name, power, warmup_epochs, min_lr
    loss:     ce_weight, dice_weight
    val:      every_epochs, source, split, batch_size
    log:      tensorboard, image_every, progress, print_every

``load_config(path, overrides)`` reads the file, applies ``key=value`` overrides (values are
parsed as YAML scalars/lists and type-checked against the field), validates everything in
:func:`validate` and returns a frozen :class:`Config`. ``to_dict`` / ``dump_yaml`` give the
resolved config saved with every run.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

from .errors import UserError

AMP_MODES = ("auto", "bf16", "fp16", "off")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("poly", "cosine", "constant")
VAL_SOURCES = ("volumes", "slices", "none")
INTERPOLATIONS = ("bilinear", "bicubic")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ModelConfig:
    """Which network. ``overrides`` go to ``build_model`` (e.g. ``{num_layers: 2}``)."""

    name: str = "R50-ViT-B_16"
    #: classes including background; 0 = take them from the dataset (``dataset.yaml``).
    num_classes: int = 0
    #: pretrained weights file (.npz ImageNet-21k, official .pth, ...) or null.
    pretrained: Optional[str] = None
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    """Where the prepared data is and how slices reach the network."""

    root: str = ""
    #: network input size in pixels (square), divisible by 16.
    img_size: int = 224
    #: list name of the training slices (``lists_Synapse/<train_split>.txt``).
    train_split: str = "train"
    num_workers: int = 0
    #: image resampling to img_size (labels always nearest).
    image_interpolation: str = "bilinear"


@dataclass(frozen=True)
class AugmentConfig:
    """Official ``RandomGenerator``: rot90+flip with p, else rotation with p of the rest."""

    enabled: bool = True
    p_rot_flip: float = 0.5
    #: probability of a rotation when no rot90+flip was drawn (official: 0.5 -> 0.25 overall).
    p_rotate: float = 0.5
    #: rotation angles are uniform in [-max_angle, max_angle] degrees.
    max_angle: float = 20.0


@dataclass(frozen=True)
class TrainConfig:
    """Loop length, precision, determinism and checkpoint cadence."""

    #: global batch (split over DDP processes; must divide by the world size).
    batch_size: int = 24
    max_epochs: int = 150
    #: 0 = max_epochs * iterations per epoch; > 0 overrides the epoch count.
    max_iterations: int = 0
    seed: int = 1234
    #: autocast: auto (bf16 on CUDA with bf16 support / CPUs with AMX or AVX512-BF16, else off), bf16, fp16, off.
    amp: str = "auto"
    channels_last: bool = True
    #: deterministic algorithms; with it a resumed CPU run repeats the uninterrupted losses.
    deterministic: bool = False
    #: also write last.pt every N iterations (0 = at epoch ends only).
    checkpoint_every_iterations: int = 0
    device: str = "auto"
    #: torch CPU threads per process (0 = torch's default). On a shared CPU, 1 thread avoids
    #: OpenMP spin-waiting and often trains faster per CPU second.
    cpu_threads: int = 0


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    #: no weight decay on biases and norm parameters (the AdamW recipes of CvT/DeiT).
    no_decay_norm_bias: bool = False
    #: clip the global gradient norm to this value (0 = off).
    grad_clip: float = 0.0


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning rate over iterations: poly ``(1 - t/T)^power``, cosine, or constant."""

    name: str = "poly"
    power: float = 0.9
    #: linear warm-up from 0, in epochs (converted to iterations).
    warmup_epochs: float = 0.0
    #: end value of the cosine schedule.
    min_lr: float = 0.0


@dataclass(frozen=True)
class LossConfig:
    """``ce_weight * CE + dice_weight * soft Dice`` (official 0.5 / 0.5)."""

    ce_weight: float = 0.5
    dice_weight: float = 0.5


@dataclass(frozen=True)
class ValConfig:
    """Per-organ Dice (chooses ``best.pt``) and HD95 on held-out volumes every N epochs."""

    every_epochs: int = 10
    #: volumes: test_vol_h5 volumes of ``split``; slices: train_npz slices of ``split``
    #: stacked per case; none: no validation (best.pt = last weights).
    source: str = "volumes"
    split: str = "test_vol"
    #: slices per forward pass.
    batch_size: int = 16
    #: also measure HD95 per organ (mm when the volumes carry their spacing, else voxels);
    #: it goes to log.jsonl, TensorBoard and best.pt's metrics (the model card reads it there).
    hd95: bool = True


@dataclass(frozen=True)
class LogConfig:
    tensorboard: bool = True
    #: image/prediction/label panels every N iterations (0 = off).
    image_every: int = 200
    progress: bool = True
    #: per-iteration losses to log.jsonl every N iterations.
    print_every: int = 1


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    val: ValConfig = field(default_factory=ValConfig)
    log: LogConfig = field(default_factory=LogConfig)


# --------------------------------------------------------------------------- building


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """Check ``value`` against the annotation ``hint``; ints are accepted for floats."""
    origin = typing.get_origin(hint)
    if origin is Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{where}: {key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"{where}: {key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads 1e-3 (no dot) as a string.
            try:
                return float(value)
            except ValueError:
                pass
        raise UserError(f"{where}: {key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            # YAML 1.1 reads off/on/no/yes as booleans (``train.amp: off``).
            return "on" if value else "off"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{where}: {key} must be a string, got {value!r}")
    if hint is tuple or origin is tuple:
        if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    for v in value):
            return tuple(float(v) for v in value)
        raise UserError(f"{where}: {key} must be a list of numbers, got {value!r}")
    if hint is dict:
        if isinstance(value, dict):
            return dict(value)
        raise UserError(f"{where}: {key} must be a mapping, got {value!r}")
    raise TypeError(f"unsupported config type {hint} for {key}")


def _build(cls, raw: Any, prefix: str, where: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{where}: '{prefix or 'top level'}' must be a mapping, got {type(raw).__name__}")
    hints = _hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(str(k) for k in raw if k not in names)
    if unknown:
        label = f"section '{prefix}'" if prefix else "top level"
        keys = ', '.join(prefix + k if not prefix else prefix + '.' + k for k in unknown)
        raise UserError(f"{where}: unknown key(s) {keys} "
                        f"in {label}; valid: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        key = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, raw[name], key, where)
        else:
            kwargs[name] = _coerce(raw[name], hint, key, where)
    return cls(**kwargs)


def _parse_override(text: str) -> tuple[list[str], Any]:
    import yaml

    if "=" not in text:
        raise UserError(f"override {text!r}: expected key=value (e.g. train.batch_size=8)")
    key, _, raw_value = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"override {text!r}: bad key {key!r}")
    try:
        value = yaml.safe_load(raw_value) if raw_value.strip() else ""
    except yaml.YAMLError:
        value = raw_value
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply dotted ``key=value`` strings to a raw config mapping (returns a new dict).

    A key must name an existing field (checked against the dataclasses, so a typo lists the
    valid keys); inside ``model.overrides`` any name is accepted (checked by ``build_model``).
    """
    import copy

    out = copy.deepcopy(raw) if raw else {}
    for text in overrides:
        parts, value = _parse_override(text)
        cls, node = Config, out
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if cls is dict:
                # free-form mapping (model.overrides)
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
                continue
            names = {f.name: f for f in fields(cls)}
            if part not in names:
                prefix = ".".join(parts[:depth]) or "top level"
                raise UserError(f"override {text!r}: unknown key '{'.'.join(parts[:depth + 1])}'; valid in "
                                f"{prefix}: {', '.join(names)}")
            hint = _hints(cls)[part]
            if last:
                if dataclasses.is_dataclass(hint):
                    raise UserError(f"override {text!r}: '{'.'.join(parts)}' is a section; set one of its keys")
                node[part] = value
            else:
                if not (dataclasses.is_dataclass(hint) or hint is dict):
                    raise UserError(f"override {text!r}: '{'.'.join(parts[:depth + 1])}' is not a section")
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node, cls = child, (hint if dataclasses.is_dataclass(hint) else dict)
    return out


def config_from_dict(raw: dict, overrides: list[str] | tuple = (), where: str = "config") -> Config:
    """Build and validate a :class:`Config` from a plain mapping plus ``key=value`` overrides."""
    raw = apply_overrides(raw or {}, list(overrides))
    cfg = _build(Config, raw, "", where)
    validate(cfg, where)
    return cfg


def load_config(path: str | os.PathLike, overrides: list[str] | tuple = ()) -> Config:
    """Read a YAML config file, apply overrides and validate.

    Relative ``data.root`` and ``model.pretrained`` paths are taken relative to the current
    directory (as typed on a command line), not to the config file.

    Raises:
        UserError: unreadable file, unknown keys, wrong types or invalid values.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read config ({exc.strerror if isinstance(exc, OSError) else exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}: not valid YAML{at}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a config must be a mapping of sections (model:, data:, train: ...)")
    return config_from_dict(raw, overrides, where=str(path))


def validate(cfg: Config, where: str = "config") -> None:
    """All value checks in one place (types were checked while building)."""

    def bad(key: str, problem: str) -> None:
        raise UserError(f"{where}: {key} {problem}")

    if not cfg.model.name:
        bad("model.name", "is required")
    if cfg.model.num_classes < 0:
        bad("model.num_classes", "must be >= 0 (0 = from the dataset)")
    if not cfg.data.root:
        bad("data.root", "is required (a folder written by `transunet prepare`)")
    if cfg.data.img_size < 16 or cfg.data.img_size % 16:
        bad("data.img_size", f"must be a positive multiple of 16, got {cfg.data.img_size}")
    if cfg.data.num_workers < 0:
        bad("data.num_workers", "must be >= 0")
    if cfg.data.image_interpolation not in INTERPOLATIONS:
        bad("data.image_interpolation", f"must be one of {', '.join(INTERPOLATIONS)}")
    for key in ("p_rot_flip", "p_rotate"):
        p = getattr(cfg.augment, key)
        if not 0.0 <= p <= 1.0:
            bad(f"augment.{key}", f"must be in [0, 1], got {p}")
    if not 0.0 <= cfg.augment.max_angle <= 180.0:
        bad("augment.max_angle", "must be in [0, 180] degrees")
    t = cfg.train
    if t.batch_size < 1:
        bad("train.batch_size", "must be >= 1")
    if t.max_epochs < 0 or t.max_iterations < 0:
        bad("train.max_epochs/max_iterations", "must be >= 0")
    if t.max_epochs == 0 and t.max_iterations == 0:
        bad("train.max_iterations", "and train.max_epochs are both 0: nothing to train")
    if t.amp not in AMP_MODES:
        bad("train.amp", f"must be one of {', '.join(AMP_MODES)}, got {t.amp!r}")
    if t.device not in DEVICES:
        bad("train.device", f"must be one of {', '.join(DEVICES)}, got {t.device!r}")
    if t.cpu_threads < 0:
        bad("train.cpu_threads", "must be >= 0 (0 = torch's default)")
    if t.checkpoint_every_iterations < 0:
        bad("train.checkpoint_every_iterations", "must be >= 0")
    o = cfg.optim
    if o.name not in OPTIMIZERS:
        bad("optim.name", f"must be one of {', '.join(OPTIMIZERS)}, got {o.name!r}")
    if not o.lr > 0:
        bad("optim.lr", "must be > 0")
    if o.weight_decay < 0 or o.momentum < 0 or o.grad_clip < 0 or o.eps <= 0:
        bad("optim", "weight_decay, momentum and grad_clip must be >= 0 and eps > 0")
    if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
        bad("optim.betas", f"must be two values in [0, 1), got {list(o.betas)}")
    s = cfg.schedule
    if s.name not in SCHEDULES:
        bad("schedule.name", f"must be one of {', '.join(SCHEDULES)}, got {s.name!r}")
    if s.power <= 0 or s.warmup_epochs < 0 or s.min_lr < 0:
        bad("schedule", "power must be > 0, warmup_epochs and min_lr >= 0")
    if cfg.loss.ce_weight < 0 or cfg.loss.dice_weight < 0 or cfg.loss.ce_weight + cfg.loss.dice_weight == 0:
        bad("loss", "weights must be >= 0 and not both 0")
    v = cfg.val
    if v.source not in VAL_SOURCES:
        bad("val.source", f"must be one of {', '.join(VAL_SOURCES)}, got {v.source!r}")
    if v.every_epochs < 0 or v.batch_size < 1:
        bad("val", "every_epochs must be >= 0 and batch_size >= 1")
    if cfg.log.image_every < 0 or cfg.log.print_every < 1:
        bad("log", "image_every must be >= 0 and print_every >= 1")
    from .models import list_models

    valid = list_models()
    if cfg.model.name.lower() not in {n.lower() for n in valid}:
        bad("model.name", f"{cfg.model.name!r} is not a registered model; valid: {', '.join(valid)}")


# --------------------------------------------------------------------------- output


def to_dict(cfg: Config) -> dict:
    """Plain nested dict (tuples as lists): YAML- and ``weights_only``-safe."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def dump_yaml(cfg: Config) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


def replace(cfg: Config, **sections: dict) -> Config:
    """A copy with some fields changed: ``replace(cfg, train={"max_epochs": 2})``."""
    changes = {name: dataclasses.replace(getattr(cfg, name), **values) for name, values in sections.items()}
    return dataclasses.replace(cfg, **changes)


def diff(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    da, db = to_dict(a), to_dict(b)
    out = []
    for section in da:
        for key in da[section]:
            if da[section][key] != db[section][key]:
                out.append(f"{section}.{key}")
    return out
