"""A checkpoint is data, never code: a file that names code to import is refused, nothing runs, nothing is fetched."""

from __future__ import annotations

import os
import socket
import urllib.request

import pytest
import torch
from run_files import TINY, hostile_checkpoint

import bralib
from bralib.cli import main
from bralib.errors import CheckpointError, UsageError
from bralib.train import TrainConfig, evaluate_checkpoint, load_trained_model
from bralib.train.checkpoint import FORMAT, load_checkpoint

HUBCONF = """
from pathlib import Path
Path("MARKER").write_text("hubconf.py ran")
def evil(**kwargs):
    Path("MARKER").write_text("factory ran")
"""


@pytest.fixture
def trap(tmp_path, monkeypatch):
    """A working directory with a hubconf.py that leaves MARKER when imported, and no network at all."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hubconf.py").write_text(HUBCONF)
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    yield tmp_path, attempts
    monkeypatch.delitem(__import__("sys").modules, "hubconf", raising=False)


def test_the_trap_is_real(trap):
    """Called directly, torch.hub runs the local hubconf.py: the refusals below are what keeps MARKER away."""
    folder, _ = trap
    torch.hub.load(str(folder), "evil", source="local", trust_repo=True)
    assert (folder / "MARKER").exists()


SOURCES = {
    "local hubconf.py": dict(repo_or_dir=".", model="evil", source="local"),
    "github repository": dict(repo_or_dir="attacker/evil-repo", model="evil", source="github", trust_repo=True),
}


def _load_trained(path):
    return load_trained_model(path)


def _evaluate(path):
    return evaluate_checkpoint(path, device="cpu")


@pytest.mark.parametrize("source", SOURCES, ids=list(SOURCES))
@pytest.mark.parametrize("loader", [_load_trained, _evaluate], ids=["load_trained_model", "evaluate_checkpoint"])
def test_torch_hub_named_in_a_checkpoint_is_refused(trap, loader, source):
    folder, attempts = trap
    path = hostile_checkpoint(folder / "evil.pt", "torch.hub:load", SOURCES[source])
    with pytest.raises(
        CheckpointError, match=r"names the model factory 'torch.hub:load', which bralib does not import"
    ):
        loader(path)
    assert not (folder / "MARKER").exists() and attempts == []


@pytest.mark.parametrize("source", SOURCES, ids=list(SOURCES))
def test_bralib_eval_refuses_it_in_one_line(trap, capsys, source):
    folder, attempts = trap
    path = hostile_checkpoint(folder / "evil.pt", "torch.hub:load", SOURCES[source])
    assert main(["eval", "--checkpoint", str(path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bralib eval: error: checkpoint") and "torch.hub:load" in err and "Traceback" not in err
    assert not (folder / "MARKER").exists() and attempts == []


@pytest.mark.parametrize("name", ["os:system", "builtins:exec", "subprocess:Popen", "hubconf:evil", "pathlib:Path"])
def test_any_module_attr_in_a_checkpoint_is_refused(trap, name):
    folder, _ = trap
    path = hostile_checkpoint(folder / "evil.pt", name)
    with pytest.raises(CheckpointError, match="bralib.list_models"):
        load_trained_model(path)
    assert not (folder / "MARKER").exists()


@pytest.mark.parametrize("suffix, text", [
    (".toml", 'model = "torch.hub:load"\nmodel_args = {repo_or_dir = ".", model = "evil", source = "local"}\n'),
    (".json", '{"model": "hubconf:evil"}'),
])  # fmt: skip
def test_a_config_file_naming_code_is_refused(trap, suffix, text):
    folder, _ = trap
    (folder / f"evil{suffix}").write_text(text)
    with pytest.raises(UsageError, match=r"names the model factory .*on the command line \(--model"):
        TrainConfig.from_file(folder / f"evil{suffix}")
    assert not (folder / "MARKER").exists()


def test_bralib_train_with_such_a_config_runs_nothing(trap, capsys):
    folder, attempts = trap
    (folder / "evil.toml").write_text('model = "hubconf:evil"\n')
    assert main(["train", "--config", "evil.toml", "--out", "run"]) == 2
    assert "bralib train: error: config file 'evil.toml' names the model factory" in capsys.readouterr().err
    assert not (folder / "MARKER").exists() and not (folder / "run").exists() and attempts == []


def _nano_factory(num_classes: int = 10, drop_path_rate: float = 0.0, **kwargs):
    return bralib.create_model("biformer_nano", num_classes=num_classes, drop_path_rate=drop_path_rate)


def test_a_factory_passed_by_the_caller_is_used(tmp_path):
    """Your own model still loads: you name its factory in code, where it is yours to trust."""
    state = _nano_factory().state_dict()
    config = {**TrainConfig(**TINY).to_dict(), "model": "my_models:nano"}
    torch.save({"format": FORMAT, "config": config, "num_classes": 10, "model": state, "ema": None, "step": 1},
               tmp_path / "mine.pt")  # fmt: skip
    model, loaded, _ = load_trained_model(tmp_path / "mine.pt", factory=_nano_factory)
    assert loaded.model == "my_models:nano" and torch.equal(model.state_dict()["head.weight"], state["head.weight"])


class Untrusted:
    pass


class RunsCode:
    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


BLOCKED = {
    "print": (RunsCode(print, "pwned"), r"(builtins\.)?print"),
    "os.system": (RunsCode(os.system, "touch MARKER"), r"(posix|os|nt)\.system"),
    "eval": (RunsCode(eval, "1 + 1"), r"(builtins\.)?eval"),
    "a class of the file's": (Untrusted(), r"test_checkpoint_security\.Untrusted"),
}


@pytest.mark.parametrize("kind", BLOCKED, ids=list(BLOCKED))
@pytest.mark.parametrize("where", ["training checkpoint", "official weights"])
def test_a_blocked_global_is_named_without_advice_to_disable_the_check(trap, kind, where):
    folder, _ = trap
    obj, pattern = BLOCKED[kind]
    torch.save({"format": FORMAT, "model": {"w": torch.zeros(1)}, "payload": obj}, folder / "evil.pt")
    with pytest.raises(CheckpointError, match=rf"was refused: the global {pattern} is not allowed") as info:
        if where == "training checkpoint":
            load_checkpoint(folder / "evil.pt")
        else:
            bralib.create_model("biformer_nano", pretrained=folder / "evil.pt")
    assert "weights_only=False" not in str(info.value) and "a checkpoint is data, never code" in str(info.value)
    assert not (folder / "MARKER").exists()
