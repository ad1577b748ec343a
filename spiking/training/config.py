"""Training configuration: one dataclass, filled from defaults, a model's recipe, a file, flags.

Precedence (later wins): :class:`Config` defaults < the model's ``RECIPE`` (e.g.
:data:`spiking.models.csnn.RECIPE`) < the model module's ``DATASET_RECIPES[(model,
dataset)]`` when it has one for the chosen dataset (e.g. the EGRU's audio recipe for
``fsdd-shd``; ``model_args`` are merged key by key) < a TOML file (``tomllib``; YAML when
PyYAML is installed) < command-line flags. Every value is checked by
:meth:`Config.validate`, which raises ``ValueError`` naming the bad key, its value and what
was expected.

A config file holds the same keys as the flags (underscores), plus a ``[model_args]`` table::

    model = "csnn"
    dataset = "nmnist"
    epochs = 10
    lr = 5e-3
    [model_args]
    channels = [12, 32]
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

DATASETS = ("nmnist", "digits", "shd", "fsdd-shd")
SCHEDULES = ("onecycle", "cosine", "constant")
AMP_MODES = ("auto", "off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
# name -> module holding the model's RECIPE (and registering its factory)
RECIPES = {"csnn": "spiking.models.csnn", "rsnn": "spiking.models.rsnn",
           "egru": "spiking.models.egru", "lsm": "spiking.models.lsm",
           "ltc": "spiking.models.ltc", "cfc": "spiking.models.ltc"}


@dataclass
class Config:
    model: str = "csnn"
    dataset: str = "nmnist"
    data_root: str | None = None
    out_dir: str = "runs"
    run_name: str | None = None
    epochs: int = 10
    batch_size: int = 32           # global batch (split evenly over distributed ranks)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    warmup_frac: float = 0.25      # OneCycle pct_start / cosine linear warm-up fraction
    grad_clip: float = 1.0         # max global gradient norm; 0 disables clipping
    label_smoothing: float = 0.0
    n_time_bins: int = 10
    augment_shift: int = 0         # random shift: frames by up to N pixels, audio N channels
    augment_dilate: float = 0.0    # random time stretch by a factor in [1 - d, 1 + d]
    augment_blend: float = 0.0     # share of samples blended with another of their class
    max_train_samples: int | None = None  # class-balanced subset (tests, demo)
    max_test_samples: int | None = None
    val_fraction: float = 0.0      # share of the training split held out for validation
    seed: int = 0
    deterministic: bool = False
    amp: str = "auto"              # on CUDA: bf16 where supported, else fp16; off on CPU
    device: str = "auto"
    progress: bool = True
    eval_every: int = 1
    plots: bool = True
    cache_dir: str | None = None   # binned-frame cache; default <user cache>/binned
    model_args: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ checks
    def validate(self) -> Config:
        def bad(key, expected):
            return ValueError(f"config {key}={getattr(self, key)!r} is invalid: expected "
                              f"{expected}")

        from spiking.models.registry import available_models

        if self.model.lower() not in available_models():
            raise ValueError(f"unknown model {self.model!r}; available: "
                             f"{', '.join(available_models())}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; expected one of "
                             f"{', '.join(DATASETS)}")
        for key in ("epochs", "batch_size", "n_time_bins", "eval_every"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(key, "an integer >= 1")
        for key in ("max_train_samples", "max_test_samples"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise bad(key, "an integer >= 1 or None")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise bad("seed", "an integer >= 0")
        if not self.lr > 0 or self.lr != self.lr or self.lr == float("inf"):
            raise bad("lr", "a finite learning rate > 0")
        for key in ("weight_decay", "grad_clip", "label_smoothing"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and 0 <= v < float("inf")):
                raise bad(key, "a finite number >= 0")
        if self.label_smoothing >= 1:
            raise bad("label_smoothing", "a number in [0, 1)")
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1):
            raise bad("val_fraction", "a number in [0, 1) (share of the training split)")
        if not 0 <= self.warmup_frac < 1:
            raise bad("warmup_frac", "a number in [0, 1)")
        if not isinstance(self.augment_shift, int) or self.augment_shift < 0:
            raise bad("augment_shift", "an integer >= 0")
        if not isinstance(self.augment_dilate, (int, float)) or not 0 <= self.augment_dilate < 1:
            raise bad("augment_dilate", "a number in [0, 1)")
        if not isinstance(self.augment_blend, (int, float)) or not 0 <= self.augment_blend <= 1:
            raise bad("augment_blend", "a number in [0, 1] (share of training samples)")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"one of {SCHEDULES}")
        if self.amp not in AMP_MODES:
            raise bad("amp", f"one of {AMP_MODES}")
        if self.device not in DEVICES:
            raise bad("device", f"one of {DEVICES}")
        if not isinstance(self.model_args, dict):
            raise bad("model_args", "a table/dict of model keyword arguments")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(names)}")
        return cls(**{k: (dict(v) if k == "model_args" else v) for k, v in d.items()})


def recipe(model: str, dataset: str | None = None) -> dict:
    """The documented default recipe of `model` (``{}`` for models without one), with the
    module's ``DATASET_RECIPES[(model, dataset)]`` merged over it when `dataset` has one."""
    mod = RECIPES.get(model.lower())
    if mod is None:
        return {}
    module = importlib.import_module(mod)
    out = json.loads(json.dumps(getattr(module, "RECIPE", {})))
    extra = getattr(module, "DATASET_RECIPES", {}).get((model.lower(), dataset))
    _merge(out, json.loads(json.dumps(extra or {})))
    return out


def _merge(into: dict, layer: dict) -> None:
    """Put ``layer``'s keys over ``into``; ``model_args`` are merged key by key."""
    for k, v in layer.items():
        if k == "model_args":
            into.setdefault("model_args", {}).update(v)
        else:
            into[k] = v


def read_file(path) -> dict:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``, needs PyYAML) config file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: YAML configs need PyYAML (pip install pyyaml); "
                             "or use a .toml file") from None
        data = yaml.safe_load(path.read_text()) or {}
    elif path.suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise ValueError(f"{path}: TOML on Python 3.10 needs tomli "
                                 "(pip install tomli)") from None
        with open(path, "rb") as f:
            data = tomllib.load(f)
    else:
        raise ValueError(f"config file {path} must end in .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise TypeError(f"config file {path} must hold a table of keys, got "
                         f"{type(data).__name__}")
    return {k.replace("-", "_"): v for k, v in data.items()}


def build(file: str | None = None, overrides: dict | None = None,
          model: str | None = None) -> Config:
    """Merge defaults, the model's recipe, `file` and `overrides` (None values are ignored)."""
    from_file = read_file(file) if file else {}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    name = overrides.get("model") or from_file.get("model") or model or Config.model
    dataset = overrides.get("dataset") or from_file.get("dataset") or Config.dataset
    merged: dict = {}
    for layer in (recipe(name, dataset), from_file, overrides):
        _merge(merged, layer)
    merged["model"] = name
    return Config.from_dict(merged).validate()
