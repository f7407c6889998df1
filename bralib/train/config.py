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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    progress: bool = _field(True, "tqdm progress bars (shown only on a terminal, and only by rank 0)")
    deterministic: bool = _field(False, "torch.use_deterministic_algorithms(True) (bit-exact reruns on one device)")
    threads: int | None = _field(None, "torch.set_num_threads per process (default: torch's choice)")

    def __post_init__(self) -> None:
        errors = []
        if self.routing not in ("content", "local"):
            errors.append(f"routing must be 'content' or 'local', got {self.routing!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            errors.append(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for name in ("epochs", "batch_size", "accum_steps", "eval_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                errors.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("num_workers", "checkpoint_every"):
            if getattr(self, name) < 0:
                errors.append(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            errors.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            errors.append(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.mixup < 0 or self.cutmix < 0:
            errors.append(f"mixup and cutmix must be >= 0, got {self.mixup}, {self.cutmix}")
        if errors:
            raise ValueError("invalid training config: " + "; ".join(errors))
        self.betas = [float(b) for b in self.betas]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Read a ``.toml`` (or ``.json``) file of fields; fields left out keep their defaults."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        return cls.from_dict(values, source=str(path))

    def to_toml(self) -> str:
        """The config as TOML (fields that are None are left out), readable by :meth:`from_file`."""
        lines = []
        for name, value in self.to_dict().items():
            if value is not None:
                lines.append(f"{name} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


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
