"""Building the model a config names, switching its routing, and rebuilding a trained one from a checkpoint.

A model name is one of ``bralib.list_models()`` or, for a model of your own, ``'package.module:factory'``.
Importing and calling a factory runs code, so a factory is taken only from the command line or the Python
API: never from a file. A checkpoint (or a config file) that names one is refused unless the caller passes
the factory explicitly (``load_trained_model(path, factory=...)``, ``bralib eval --model-factory ...``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bralib.errors import CheckpointError, UsageError
from bralib.ops import BiLevelRoutingAttention
from bralib.train.checkpoint import chosen_weights, load_checkpoint, load_model_state
from bralib.train.config import TrainConfig

Factory = Callable[..., nn.Module]


def is_factory_name(name: str) -> bool:
    """Whether ``name`` names code to import ('package.module:factory') rather than a model of bralib's registry."""
    return ":" in name


def import_factory(name: str) -> Factory:
    """The callable ``'package.module:factory'`` names. Runs the module's code: only for names a user typed."""
    module_name, attr = name.split(":", 1)
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise UsageError(f"model {name!r}: cannot import {attr!r} from {module_name!r} ({err})") from err


def _factory(name: str, factory: Factory | str | None = None) -> Factory:
    if factory is not None:  # given by the caller: trusted as code
        return import_factory(factory) if isinstance(factory, str) else factory
    if is_factory_name(name):
        return import_factory(name)
    import bralib

    def create(**kwargs: Any) -> nn.Module:
        try:
            return bralib.create_model(name, **kwargs)
        except TypeError as err:  # unknown model_args
            raise UsageError(str(err)) from err

    return create


def set_routing(model: nn.Module, routing: str) -> int:
    """Set ``routing`` ('content' or 'local') on every BRA layer of ``model``; returns how many there are."""
    layers = [m for m in model.modules() if isinstance(m, BiLevelRoutingAttention)]
    for layer in layers:
        layer.routing = routing
    return len(layers)


def build_model(config: TrainConfig, num_classes: int, *, factory: Factory | str | None = None) -> nn.Module:
    """The config's model with ``num_classes`` outputs, its drop-path rate, model_args and routing.

    ``factory`` (a callable or 'package.module:factory') builds the model in place of the one ``config.model``
    names; the callers that read ``config`` from a file pass it, since they never import a name from a file.
    """
    kwargs: dict[str, Any] = {"num_classes": num_classes, "drop_path_rate": config.drop_path, **config.model_args}
    model = _factory(config.model, factory)(**kwargs)
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
    payload = load_checkpoint(path, purpose="inference", what="--init checkpoint")
    state, _ = chosen_weights(payload, ema=ema)
    load_model_state(model, state, source=f"--init checkpoint {str(path)!r}")
    return payload["config"]


def stored_config(payload: dict[str, Any], path: str | Path, factory: Factory | str | None) -> TrainConfig:
    """The config a checkpoint stores, refusing a model factory named in it unless the caller passed one."""
    try:
        config = TrainConfig.from_dict(payload["config"], source=f"config stored in {str(path)!r}")
    except ValueError as err:
        raise CheckpointError(str(err)) from err
    if is_factory_name(config.model) and factory is None:
        raise CheckpointError(
            f"checkpoint {str(path)!r} names the model factory {config.model!r}, which bralib does not import: a "
            "checkpoint is data, never code, so only the models of bralib.list_models() are built from a file. "
            "If you trust that code, pass the factory yourself: load_trained_model(path, factory=...) or "
            "bralib eval --model-factory MODULE:FACTORY"
        )
    return config


def load_trained_model(
    path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu", factory: Factory | str | None = None
) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """Rebuild the model a training checkpoint was saved from, with its (EMA by default) weights, in eval mode.

    The model is one of bralib's registry, by the name the checkpoint stores. A checkpoint of your own model
    (``'package.module:factory'``) needs ``factory``: that callable, or its name, which you trust as code.
    Returns (model, config, info) where info holds the step, num_classes and the stored metrics.
    """
    payload = load_checkpoint(path, purpose="inference")
    config = stored_config(payload, path, factory)
    model = build_model(config, payload["num_classes"], factory=factory)
    state, use_ema = chosen_weights(payload, ema=ema)
    load_model_state(model, state, source=f"checkpoint {str(path)!r}")
    weights = "ema" if use_ema else payload.get("weights", "model")  # exported files say which they hold
    info = {"step": payload["step"], "num_classes": payload["num_classes"], "ema": weights == "ema",
            "metrics": payload.get("metrics", {})}  # fmt: skip
    return model.to(device).eval(), config, info
