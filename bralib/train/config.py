"""The training configuration: one dataclass, read from a TOML file and/or the command line.

Precedence: the defaults below < ``--config FILE.toml`` < flags given on the command line. Every
field is a flag (``lr`` -> ``--lr``, ``batch_size`` -> ``--batch-size``) whose help text is the
field's ``help`` metadata, so ``--help`` documents all of them. ``None`` means "not set" (TOML has
no null: leave the key out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bralib.errors import UsageError

# Fields that may change when a run is resumed: where and how it runs, not what it computes.
RUN_FIELDS = frozenset(
    {"out", "resume", "device", "num_workers", "progress", "checkpoint_every", "eval_every", "threads", "config"}
)


def _field(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TrainConfig:
    # what to train
    model: str = _field("biformer_nano", "model name for bralib.create_model, or 'package.module:factory'")
    model_args: dict[str, Any] = _field({}, "extra keyword arguments for the model, KEY=VALUE (value in TOML syntax)")
    routing: str = _field(
        "content",
        "routing of every BRA block: 'content' (BRA) or 'local' (nearest regions, same cost)",
        choices=("content", "local"),
    )
    init: str | None = _field(
        None, "start from these weights (a checkpoint or exported weights; its EMA weights when it has them)"
    )
    drop_path: float = _field(0.0, "stochastic depth: drop-path rate of the last block (grows linearly from 0)")
    # data
    data: str = _field("digits-pairs", "'digits-pairs' or a directory holding train/ and val/ ImageFolder trees")
    relation: str = _field(
        "partner",
        "digits-pairs label: 'partner' (10 classes: the digit sharing the marked cue's tint), 'cue' (10: the marked "
        "digit itself, same images), 'same' (2), 'sum-mod-10' (10)",
        choices=("partner", "cue", "same", "sum-mod-10"),
    )
    distractors: int = _field(2, "digits-pairs: tinted distractor digits per image")
    strokes: int = _field(0, "digits-pairs: grey line segments per image (clutter; 0 = none)")
    image_size: int | None = _field(None, "input side in pixels (default: 64 for digits-pairs, 224 for folders)")
    train_size: int | None = _field(None, "number of training images (default: digits-pairs 3072, folders all)")
    val_size: int | None = _field(None, "number of validation images (default: digits-pairs 1024, folders all)")
    randaugment_ops: int = _field(2, "RandAugment operations per image on image folders (0 turns it off)")
    randaugment_magnitude: float = _field(9.0, "RandAugment magnitude on a 0-10 scale (the recipe's m9)")
    random_erasing: float = _field(0.0, "probability of random erasing on image folders (the recipe: 0.25)")
    num_workers: int = _field(2, "DataLoader worker processes per training process (0 loads in the main process)")
    # optimisation
    epochs: int = _field(10, "training epochs")
    batch_size: int = _field(64, "images per process per micro-batch (global batch = this x processes x accum-steps)")
    accum_steps: int = _field(1, "micro-batches accumulated into one optimizer step")
    lr: float = _field(1e-3, "peak learning rate (the paper: 5e-4 x global batch / 512)")
    min_lr: float = _field(1e-5, "learning rate at the end of the cosine schedule")
    warmup_lr: float = _field(1e-6, "learning rate at step 0 of the linear warm-up")
    warmup_epochs: float = _field(1.0, "length of the linear warm-up in epochs (converted to optimizer steps)")
    weight_decay: float = _field(0.05, "AdamW weight decay (never applied to norms, biases and position convs)")
    betas: list[float] = _field([0.9, 0.999], "AdamW betas", nargs=2)
    no_decay_keywords: list[str] = _field(
        ["pos_conv", "pos_embed"], "parameter names containing one of these get no weight decay (position convs)"
    )
    label_smoothing: float = _field(0.1, "label smoothing of the cross-entropy targets")
    mixup: float = _field(0.0, "mixup Beta(alpha, alpha) parameter (0 turns it off; the recipe: 0.8)")
    cutmix: float = _field(0.0, "cutmix Beta(alpha, alpha) parameter (0 turns it off; the recipe: 1.0)")
    mixup_prob: float = _field(1.0, "probability of mixing a batch at all when mixup or cutmix is on")
    mixup_switch_prob: float = _field(0.5, "probability of cutmix instead of mixup when both are on")
    clip_grad: float | None = _field(None, "clip the global gradient norm to this value (default: no clipping)")
    amp: bool = _field(False, "mixed precision: float16 + GradScaler on CUDA, bfloat16 autocast on CPU")
    ema_decay: float = _field(0.999, "decay of the exponential moving average of the weights (0 turns EMA off)")
    compile: bool = _field(False, "torch.compile the model")
    # running
    seed: int = _field(0, "seed of weights, data order, augmentation and dataset layouts")
    device: str = _field(
        "auto",
        "'cpu', 'cuda' or 'auto' (cuda when available); under torchrun each process its own GPU",
        choices=("auto", "cpu", "cuda"),
    )
    out: str = _field("runs/train", "run directory: checkpoint.pt, log.jsonl, config.toml, metrics.json")
    resume: bool = _field(False, "continue from OUT/checkpoint.pt (exactly: same weights as an uninterrupted run)")
    checkpoint_every: int = _field(200, "write OUT/checkpoint.pt every N optimizer steps (and after every epoch)")
    eval_every: int = _field(1, "evaluate every N epochs (and after the last)")
    progress: bool = _field(
        True, "progress (rank 0 only): a tqdm bar on a terminal, else a plain line every tenth of an epoch"
    )
    deterministic: bool = _field(False, "torch.use_deterministic_algorithms(True) (bit-exact reruns on one device)")
    threads: int | None = _field(None, "torch.set_num_threads per process (default: torch's choice)")

    def __post_init__(self) -> None:
        errors = [problem for f in dataclasses.fields(self) if (problem := _type_problem(f, getattr(self, f.name)))]
        if errors:  # ranges are only checked on values of the right type
            raise UsageError("invalid training config: " + "; ".join(errors))
        errors = [f"{name} {rule}, got {getattr(self, name)!r}" for name, rule, ok in self._rules() if not ok]
        if errors:
            raise UsageError("invalid training config: " + "; ".join(errors))
        self.betas = [float(b) for b in self.betas]

    def _rules(self) -> list[tuple[str, str, bool]]:
        """(field, what is allowed, whether the value obeys it). ``None`` always means "not set" and ``0`` never
        means "default": a count or size that is given must be usable as it is."""
        unit = lambda v: 0.0 <= v <= 1.0  # noqa: E731
        optional_positive = lambda v: v is None or v >= 1  # noqa: E731
        rules = [
            ("routing", "must be 'content' or 'local'", self.routing in ("content", "local")),
            ("device", "must be 'auto', 'cpu' or 'cuda'", self.device in ("auto", "cpu", "cuda")),
            ("model", "must be a model name (bralib.list_models()) or 'package.module:factory'", bool(self.model)),
            ("data", "must be 'digits-pairs' or a directory", bool(self.data)),
            ("out", "must be a directory path", bool(self.out)),
            ("lr", "must be > 0", self.lr > 0),
            ("drop_path", "must be in [0, 1)", 0.0 <= self.drop_path < 1.0),
            ("ema_decay", "must be in [0, 1) (0 turns EMA off)", 0.0 <= self.ema_decay < 1.0),
            ("label_smoothing", "must be in [0, 1)", 0.0 <= self.label_smoothing < 1.0),
            ("mixup", "must be >= 0 (0 turns it off)", self.mixup >= 0),
            ("cutmix", "must be >= 0 (0 turns it off)", self.cutmix >= 0),
            ("mixup_prob", "is a probability: must be in [0, 1]", unit(self.mixup_prob)),
            ("mixup_switch_prob", "is a probability: must be in [0, 1]", unit(self.mixup_switch_prob)),
            ("random_erasing", "is a probability: must be in [0, 1]", unit(self.random_erasing)),
            ("randaugment_magnitude", "must be in [0, 10]", 0.0 <= self.randaugment_magnitude <= 10.0),
            ("betas", "must be two numbers in [0, 1)", len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)),
            ("clip_grad", "must be > 0 (leave it out for no clipping)", self.clip_grad is None or self.clip_grad > 0),
            ("image_size", "must be >= 1 (leave it out for the default)", optional_positive(self.image_size)),
            ("train_size", "must be >= 1 (leave it out for the default)", optional_positive(self.train_size)),
            ("val_size", "must be >= 1 (leave it out for the default)", optional_positive(self.val_size)),
            ("threads", "must be >= 1 (leave it out for torch's choice)", optional_positive(self.threads)),
        ]
        rules += [(name, "must be a positive integer (>= 1)", getattr(self, name) >= 1)
                  for name in ("epochs", "batch_size", "accum_steps", "eval_every")]  # fmt: skip
        rules += [(name, "must be >= 0", getattr(self, name) >= 0)
                  for name in ("num_workers", "checkpoint_every", "distractors", "strokes", "randaugment_ops", "seed",
                               "min_lr", "warmup_lr", "warmup_epochs", "weight_decay")]  # fmt: skip
        finite = ("lr", "min_lr", "warmup_lr", "warmup_epochs", "weight_decay", "mixup", "cutmix")
        rules += [(name, "must be finite", math.isfinite(getattr(self, name))) for name in finite]
        return rules

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str | None = None) -> TrainConfig:
        """A config from a dict of fields; unknown fields, wrong types and values out of range are refused.

        ``source`` (a file, "config stored in ...") starts every error message.
        """
        prefix = f"{source}: " if source else ""
        if not isinstance(values, dict):
            raise UsageError(f"{prefix}expected a table of config fields, got {type(values).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UsageError(f"{prefix}unknown field(s) {unknown}; allowed fields: {', '.join(known)}")
        try:
            return cls(**values)
        except UsageError as err:
            raise UsageError(f"{prefix}{err}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a ``.toml`` (or ``.json``) file of fields; fields left out keep their defaults.

        A file is data: its ``model`` must be one of bralib's models, never a ``'package.module:factory'``
        to import (give that on the command line, ``--model``, or to :class:`TrainConfig` in Python).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise UsageError(f"config file {str(path)!r} is not UTF-8 text ({err})") from None
        try:
            values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(
                f"config file {str(path)!r}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
            ) from None
        except tomllib.TOMLDecodeError as err:
            raise UsageError(f"config file {str(path)!r}: invalid TOML: {err}") from None
        if isinstance(values, dict) and isinstance(values.get("model"), str) and ":" in values["model"]:
            raise UsageError(
                f"config file {str(path)!r} names the model factory {values['model']!r}: bralib does not import code "
                "named in a file. Give it on the command line (--model MODULE:FACTORY) or to TrainConfig in Python"
            )
        return cls.from_dict(values, source=f"config file {str(path)!r}")

    def to_toml(self) -> str:
        """The config as TOML (fields that are None are left out), readable by :meth:`from_file`."""
        lines = []
        for name, value in self.to_dict().items():
            if value is not None:
                lines.append(f"{name} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _type_problem(f: dataclasses.Field, value: Any) -> str | None:
    """Why ``value`` does not have the type field ``f`` declares (None when it does). Strict: a string is not a
    bool ("false" would be true), a bool is not an int (True would be 1 epoch)."""
    kind = f.type.split(" |")[0]
    if value is None:
        return None if "None" in f.type else f"{f.name} must not be empty, expected {_KIND_WORDS[kind]}"
    if kind == "list[float]":
        ok = isinstance(value, (list, tuple)) and all(_is_number(v) for v in value)
    elif kind == "list[str]":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    elif kind == "dict[str, Any]":
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = _is_number(value)
    else:
        ok = isinstance(value, str)
    if ok:
        return None
    return f"{f.name} must be {_KIND_WORDS[kind]}, got {type(value).__name__} {value!r}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_KIND_WORDS = {
    "bool": "true or false (a boolean, not a string)",
    "int": "an integer (not a boolean)",
    "float": "a number",
    "str": "a string",
    "list[float]": "a list of numbers",
    "list[str]": "a list of strings",
    "dict[str, Any]": "a table of KEY = VALUE",
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def config_differences(saved: dict[str, Any], current: dict[str, Any], ignore=RUN_FIELDS) -> list[str]:
    """Human-readable ``field: saved -> current`` lines for the fields that differ (``ignore`` aside)."""
    names = sorted((set(saved) | set(current)) - set(ignore))
    missing = object()
    return [
        f"{name}: checkpoint {saved.get(name, missing)!r}, now {current.get(name, missing)!r}".replace(
            repr(missing), "<absent>"
        )
        for name in names
        if saved.get(name, missing) != current.get(name, missing)
    ]


# ----------------------------------------------------------------------------------------------------
# Command line: one flag per field.


def _parse_model_arg(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value  # a bare word is a string
    return key.strip(), parsed


def _optional(kind: type):
    def parse(text: str):
        return None if text.lower() in ("none", "") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (default None = "not given"), plus ``--config FILE``."""
    parser.add_argument("--config", metavar="FILE", help="TOML file of config fields; flags given here override it")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{f.metadata['help']} (default: {default})"
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.name == "model_args":
            parser.add_argument(
                "--model-arg", dest="model_args", action="append", type=_parse_model_arg, metavar="KEY=VALUE",
                default=None, help=f"{f.metadata['help']}; repeatable",
            )  # fmt: skip
        elif f.type.startswith("list"):
            kind = float if "float" in f.type else str
            nargs = f.metadata.get("nargs", "+")
            parser.add_argument(flag, type=kind, nargs=nargs, default=None, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type.split(" |")[0]]
            parser.add_argument(
                flag,
                type=_optional(kind) if "None" in f.type else kind,
                default=None,
                help=help_text,
                choices=f.metadata.get("choices"),
            )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then ``--config``, then the flags that were given."""
    values = TrainConfig.from_file(args.config).to_dict() if getattr(args, "config", None) else {}
    for f in dataclasses.fields(TrainConfig):
        given = getattr(args, f.name, None)
        if given is None:
            continue
        if f.name == "model_args":
            values["model_args"] = {**values.get("model_args", {}), **dict(given)}
        else:
            values[f.name] = given
    return TrainConfig.from_dict(values)
