"""Every sub-command reports a user's error the same way: one line, ``bralib <cmd>: error: ...``, exit code 2;
the traceback only behind ``--traceback`` or ``BRALIB_TRACEBACK=1``, and a bug keeps its traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
import torch
from run_files import TINY

from bralib.cli import main
from bralib.errors import CheckpointError


def _train_flags(out):
    flags = sum(([f"--{k.replace('_', '-')}", str(v)] for k, v in TINY.items() if k != "progress"), [])
    return ["train", *flags, "--no-progress", "--out", str(out)]


def _existing_run(tmp_path):
    (tmp_path / "run").mkdir()
    torch.save({}, tmp_path / "run" / "checkpoint.pt")
    return _train_flags(tmp_path / "run")


USER_ERRORS = {
    "train: missing --config": (lambda t: ["train", "--config", str(t / "none.toml")],
                                r"bralib train: error: config file '.*none\.toml' does not exist"),
    "train: unknown model": (lambda t: [*_train_flags(t / "r"), "--model", "biformer_huge"],
                             r"bralib train: error: unknown model 'biformer_huge'; known models: .*biformer_nano"),
    "train: unknown model option": (lambda t: [*_train_flags(t / "r"), "--model-arg", "depth=3"],
                                    r"bralib train: error: create_model\('biformer_nano'\) got unknown option"),
    "train: data nowhere": (lambda t: [*_train_flags(t / "r"), "--data", str(t / "imagenet")],
                            r"bralib train: error: data '.*imagenet' is neither a built-in dataset"),
    "train: out has a run": (_existing_run, r"bralib train: error: '.*checkpoint\.pt' exists: pass --resume"),
    "train: digits at 32 px": (lambda t: [*_train_flags(t / "r"), "--image-size", "32"],
                               r"bralib train: error: digits-pairs images are 64x64"),
    "eval: missing checkpoint": (lambda t: ["eval", "--checkpoint", str(t / "none.pt")],
                                 r"bralib eval: error: checkpoint '.*none\.pt' does not exist"),
    "eval: text checkpoint": (lambda t: (t / "notes.pt").write_text("hello") and
                              ["eval", "--checkpoint", str(t / "notes.pt")],
                              r"bralib eval: error: checkpoint '.*notes\.pt' is not a PyTorch file: it is a text file"),
    "bench: --report missing": (lambda t: ["bench", "--report", str(t / "none.json")],
                                r"bralib bench: cannot read .*none\.json"),
}  # fmt: skip


@pytest.mark.parametrize("case", USER_ERRORS, ids=list(USER_ERRORS))
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch, case):
    monkeypatch.delenv("BRALIB_TRACEBACK", raising=False)
    argv, message = USER_ERRORS[case]
    assert main(argv(tmp_path)) == 2
    captured = capsys.readouterr()
    text = (captured.err or captured.out).strip()
    assert len(text.splitlines()) == 1 and "Traceback" not in text
    assert __import__("re").match(message, text), text


def test_the_traceback_flag_shows_the_whole_error(tmp_path, monkeypatch):
    monkeypatch.delenv("BRALIB_TRACEBACK", raising=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        main(["--traceback", "eval", "--checkpoint", str(tmp_path / "none.pt")])


@pytest.mark.parametrize("value, shown", [("1", True), ("0", False), ("", False)])
def test_the_environment_variable_shows_it_too(tmp_path, monkeypatch, value, shown):
    monkeypatch.setenv("BRALIB_TRACEBACK", value)
    argv = ["eval", "--checkpoint", str(tmp_path / "none.pt")]
    if shown:
        with pytest.raises(CheckpointError):
            main(argv)
    else:
        assert main(argv) == 2


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(config):
        raise RuntimeError("an internal bug")

    monkeypatch.setattr("bralib.train.loop.train", broken)
    with pytest.raises(RuntimeError, match="an internal bug"):
        main(_train_flags(tmp_path / "run"))


def test_python_m_bralib_train_reports_the_same_way(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("BRALIB_TRACEBACK", None)
    done = subprocess.run([sys.executable, "-m", "bralib.train", "--config", str(tmp_path / "none.toml")],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"python -m bralib.train: error: config file '{tmp_path / 'none.toml'}' does not exist"
    ]


@pytest.mark.parametrize("code, one_line", [(errno.ENOSPC, True), (errno.EROFS, True), (errno.EIO, False)])
def test_errors_of_the_machine_are_one_line_but_other_os_errors_keep_their_traceback(tmp_path, monkeypatch, capsys,
                                                                                     code, one_line):  # fmt: skip
    def write(self, kind, **values):
        raise OSError(code, os.strerror(code))

    monkeypatch.delenv("BRALIB_TRACEBACK", raising=False)
    monkeypatch.setattr("bralib.train.runlog.RunLog.write", write)
    if one_line:
        assert main(_train_flags(tmp_path / "run")) == 2
        assert capsys.readouterr().err == f"bralib train: error: [Errno {code}] {os.strerror(code)}\n"
    else:
        with pytest.raises(OSError, match=os.strerror(code)):
            main(_train_flags(tmp_path / "run"))
