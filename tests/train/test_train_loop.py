"""train(config) in this process: a step that learns, the files a run leaves, accumulation, every recipe switch."""

import json

import pytest
import torch

from bralib.data import build_datasets
from bralib.train import TrainConfig, build_model, load_trained_model, read_log, train
from bralib.train.mixup import smooth_one_hot, soft_target_cross_entropy
from bralib.train.optim import build_optimizer

NANO = "biformer_nano"
TOY = "train_toy_models:toy_bra"  # tests/train/train_toy_models.py, importable from this folder
TINY = dict(train_size=16, val_size=8, batch_size=8, num_workers=0, threads=1, progress=False)


def test_one_training_step_decreases_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    spec = build_datasets("digits-pairs", image_size=64, train_size=16, val_size=8)
    images = torch.stack([spec.train[(i, i)][0] for i in range(16)])
    labels = torch.tensor([spec.train[(i, i)][1] for i in range(16)])
    model = build_model(TrainConfig(model=NANO), spec.num_classes).train()
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    targets = smooth_one_hot(labels, spec.num_classes, 0.1)
    losses = []
    for _ in range(2):
        loss = soft_target_cross_entropy(model(images), targets)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[1] < losses[0], losses


def test_a_run_leaves_checkpoint_log_config_and_metrics(tmp_path):
    out = tmp_path / "run"
    result = train(TrainConfig(model=NANO, epochs=2, out=str(out), checkpoint_every=1, **TINY))
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "log.jsonl", "config.toml", "metrics.json"}
    records = read_log(out)
    steps = [r for r in records if r["kind"] == "step"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and r["lr"] > 0 and r["images_per_s"] > 0 for r in steps)
    assert [r["epoch"] for r in evals] == [1, 2] and all(0 <= r["top1"] <= 100 and "ema_top1" in r for r in evals)
    assert json.loads((out / "metrics.json").read_text())["top1"] == result["top1"]
    assert TrainConfig.from_file(out / "config.toml").epochs == 2
    model, config, info = load_trained_model(out / "checkpoint.pt")
    assert config.model == NANO and info["step"] == 4 and info["ema"] and not model.training
    from bralib.viz import plot_history

    fig = plot_history(out)
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) == 1


def test_accumulated_micro_batches_equal_one_big_batch(tmp_path):
    common = dict(TINY, model=TOY, epochs=1, ema_decay=0.0, label_smoothing=0.0, warmup_epochs=0.0)
    big = train(TrainConfig(**{**common, "batch_size": 8, "accum_steps": 1}, out=str(tmp_path / "big")))
    small = train(TrainConfig(**{**common, "batch_size": 4, "accum_steps": 2}, out=str(tmp_path / "small")))
    assert big["steps"] == small["steps"] == 2
    a = torch.load(tmp_path / "big" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "small" / "checkpoint.pt", weights_only=True)["model"]
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_every_recipe_switch_at_once(tmp_path):
    config = TrainConfig(
        model=NANO, epochs=1, out=str(tmp_path / "all"), amp=True, clip_grad=1.0, mixup=0.8, cutmix=1.0,
        drop_path=0.1, accum_steps=2, **{**TINY, "batch_size": 4},
    )  # fmt: skip
    result = train(config)
    losses = [r["loss"] for r in read_log(tmp_path / "all") if r["kind"] == "step"]
    assert result["steps"] == 2 and all(torch.isfinite(torch.tensor(losses)))


def test_refuses_to_overwrite_a_run_and_asking_for_cuda_without_one(tmp_path):
    train(TrainConfig(model=TOY, epochs=1, out=str(tmp_path / "r"), **TINY))
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(TrainConfig(model=TOY, epochs=1, out=str(tmp_path / "r"), **TINY))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="use --device cpu"):
            train(TrainConfig(model=TOY, epochs=1, out=str(tmp_path / "c"), device="cuda", **TINY))


def test_init_starts_a_run_from_another_runs_weights(tmp_path):
    from bralib.train import distributed
    from bralib.train.loop import Trainer

    first = tmp_path / "first"
    train(TrainConfig(model=TOY, epochs=1, out=str(first), **TINY))
    start = Trainer(TrainConfig(model=TOY, epochs=1, out=str(tmp_path / "second"), init=str(first / "checkpoint.pt"),
                                **TINY), distributed.setup("cpu"))  # fmt: skip
    ema = torch.load(first / "checkpoint.pt", weights_only=True)["ema"]["module"]
    for name, value in start.model.state_dict().items():
        assert torch.equal(value, ema[name]), name  # the EMA weights, which evaluate best
    for name, value in start.ema.module.state_dict().items():
        assert torch.equal(value, ema[name]), name  # and the new run's average starts there too
    wider = TrainConfig(model=TOY, model_args={"dim": 32}, epochs=1, out=str(tmp_path / "third"),
                        init=str(first / "checkpoint.pt"), **TINY)  # fmt: skip
    with pytest.raises(ValueError, match=r"--init checkpoint .* does not fit this model"):
        train(wider)


def test_exports_are_functions_even_after_every_submodule_is_imported():
    import importlib
    import pkgutil
    import types

    import bralib.train as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name != "__main__":
            importlib.import_module(f"bralib.train.{info.name}")
    for name in package.__all__:
        assert not isinstance(getattr(package, name), types.ModuleType), f"bralib.train.{name} is shadowed by a module"
