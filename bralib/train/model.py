"""Building the model a config names, switching its routing, and rebuilding a trained one from a checkpoint."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bralib.ops import BiLevelRoutingAttention
from bralib.train.checkpoint import chosen_weights, load_checkpoint, load_model_state
from bralib.train.config import TrainConfig


def _factory(name: str):
    if ":" in name:  # 'package.module:factory', e.g. a model of your own
        module_name, attr = name.split(":", 1)
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"model {name!r}: cannot import {attr!r} from {module_name!r} ({err})") from err
    import bralib

    return lambda **kwargs: bralib.create_model(name, **kwargs)


def set_routing(model: nn.Module, routing: str) -> int:
    """Set ``routing`` ('content' or 'local') on every BRA layer of ``model``; returns how many there are."""
    layers = [m for m in model.modules() if isinstance(m, BiLevelRoutingAttention)]
    for layer in layers:
        layer.routing = routing
    return len(layers)


def build_model(config: TrainConfig, num_classes: int) -> nn.Module:
    """The config's model with ``num_classes`` outputs, its drop-path rate, model_args and routing."""
    kwargs: dict[str, Any] = {"num_classes": num_classes, "drop_path_rate": config.drop_path, **config.model_args}
    model = _factory(config.model)(**kwargs)
    n_bra = set_routing(model, config.routing)
    if config.routing != "content" and n_bra == 0:
        raise ValueError(f"routing={config.routing!r} was asked for, but model {config.model!r} has no BRA layers")
    return model


def load_weights(model: nn.Module, path: str | Path, *, ema: bool = True) -> dict[str, Any]:
    """Copy the weights of a checkpoint (its EMA weights when it has them and ``ema``) into ``model``.

    Used by ``--init`` to start a run from another run's weights (fine-tuning). Every key and shape
    must match: a checkpoint of another model fails with a list of the differences. Returns the
    checkpoint's config, as a dict.
    """
    payload = load_checkpoint(path)
    state, _ = chosen_weights(payload, ema=ema)
    load_model_state(model, state, source=f"--init checkpoint {str(path)!r}")
    return payload["config"]


def load_trained_model(
    path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu"
) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """Rebuild the model a training checkpoint was saved from, with its (EMA by default) weights, in eval mode.

    Returns (model, config, info) where info holds the step, num_classes and the stored metrics.
    """
    payload = load_checkpoint(path)
    config = TrainConfig.from_dict(payload["config"], source=f"config stored in {path}")
    model = build_model(config, payload["num_classes"])
    state, use_ema = chosen_weights(payload, ema=ema)
    load_model_state(model, state, source=f"checkpoint {str(path)!r}")
    weights = "ema" if use_ema else payload.get("weights", "model")  # exported files say which they hold
    info = {"step": payload["step"], "num_classes": payload["num_classes"], "ema": weights == "ema",
            "metrics": payload.get("metrics", {})}  # fmt: skip
    return model.to(device).eval(), config, info
