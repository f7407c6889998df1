"""The command lines: every config field is a documented flag; bralib train/eval and -m bralib.train agree."""

import argparse
import dataclasses
import subprocess
import sys

import pytest

from bralib.cli import build_parser
from bralib.train.cli import build_parser as module_parser
from bralib.train.config import TrainConfig


def help_text(argv):
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([*argv, "--help"])
    assert exit_info.value.code == 0


def flags_and_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    return {opt: action.help or "" for action in parser._actions for opt in action.option_strings}


def subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_train_help_documents_every_config_field(capsys):
    help_text(["train"])
    printed = capsys.readouterr().out
    flags = flags_and_help(subcommand("train"))
    for f in dataclasses.fields(TrainConfig):
        flag = "--model-arg" if f.name == "model_args" else "--" + f.name.replace("_", "-")
        assert flag in printed, flag
        assert len(flags[flag]) > 15, f"{flag} has no real help text"
    for required in ("--model", "--data", "--epochs", "--batch-size", "--out", "--resume", "--device", "--amp"):
        assert required in printed
    assert "torchrun --nproc_per_node" in printed


def test_eval_help_documents_every_flag(capsys):
    help_text(["eval"])
    printed = capsys.readouterr().out
    for flag, text in flags_and_help(subcommand("eval")).items():
        assert flag in printed and (flag in ("-h", "--help") or len(text) > 10), flag
    assert "--checkpoint" in printed and "--data" in printed


def test_module_entry_point_has_the_same_flags():
    assert set(flags_and_help(module_parser())) == set(flags_and_help(subcommand("train")))
    result = subprocess.run(
        [sys.executable, "-m", "bralib.train", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--batch-size" in result.stdout


def test_bad_flag_values_are_rejected_with_the_allowed_ones(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--routing", "random"])
    assert "invalid choice: 'random'" in capsys.readouterr().err
