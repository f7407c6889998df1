"""Training config from Python, TOML, JSON and flags: strict types, ranges, named files; 0 never means "default"."""

from __future__ import annotations

import math

import pytest

from bralib.cli import main
from bralib.errors import UsageError
from bralib.train import TrainConfig

WRONG_TYPES = {
    "amp='false'": ({"amp": "false"}, r"amp must be true or false \(a boolean, not a string\), got str 'false'"),
    "resume='false'": ({"resume": "false"}, r"resume must be true or false .*got str 'false'"),
    "compile=1": ({"compile": 1}, r"compile must be true or false .*got int 1"),
    "progress=None": ({"progress": None}, r"progress must not be empty, expected true or false"),
    "epochs=True": ({"epochs": True}, r"epochs must be an integer \(not a boolean\), got bool True"),
    "epochs=2.0": ({"epochs": 2.0}, r"epochs must be an integer .*got float 2.0"),
    "batch_size='64'": ({"batch_size": "64"}, r"batch_size must be an integer .*got str '64'"),
    "image_size=True": ({"image_size": True}, r"image_size must be an integer .*got bool True"),
    "lr='1e-3'": ({"lr": "1e-3"}, r"lr must be a number, got str '1e-3'"),
    "lr=True": ({"lr": True}, r"lr must be a number, got bool True"),
    "clip_grad='1'": ({"clip_grad": "1"}, r"clip_grad must be a number, got str"),
    "betas with a string": ({"betas": [0.9, "x"]}, r"betas must be a list of numbers"),
    "no_decay_keywords a string": ({"no_decay_keywords": "pos"}, r"no_decay_keywords must be a list of strings"),
    "model_args a list": ({"model_args": [1]}, r"model_args must be a table of KEY = VALUE"),
    "model an int": ({"model": 3}, r"model must be a string, got int 3"),
}


@pytest.mark.parametrize("case", WRONG_TYPES, ids=list(WRONG_TYPES))
def test_wrong_types_are_refused(case):
    values, message = WRONG_TYPES[case]
    with pytest.raises(UsageError, match=message):
        TrainConfig(**values)


OUT_OF_RANGE = {
    "clip_grad -1": ({"clip_grad": -1.0}, r"clip_grad must be > 0 \(leave it out for no clipping\), got -1.0"),
    "clip_grad 0": ({"clip_grad": 0.0}, r"clip_grad must be > 0"),
    "min_lr -1e-5": ({"min_lr": -1e-5}, r"min_lr must be >= 0, got -1e-05"),
    "warmup_lr -1e-6": ({"warmup_lr": -1e-6}, r"warmup_lr must be >= 0"),
    "weight_decay -0.05": ({"weight_decay": -0.05}, r"weight_decay must be >= 0"),
    "warmup_epochs -1": ({"warmup_epochs": -1.0}, r"warmup_epochs must be >= 0"),
    "lr 0": ({"lr": 0.0}, r"lr must be > 0, got 0.0"),
    "lr nan": ({"lr": math.nan}, r"lr must be finite, got nan"),
    "weight_decay inf": ({"weight_decay": math.inf}, r"weight_decay must be finite"),
    "mixup_prob 1.5": ({"mixup_prob": 1.5}, r"mixup_prob is a probability: must be in \[0, 1\], got 1.5"),
    "mixup_switch_prob -0.1": ({"mixup_switch_prob": -0.1}, r"mixup_switch_prob is a probability"),
    "random_erasing 2": ({"random_erasing": 2.0}, r"random_erasing is a probability: must be in \[0, 1\]"),
    "label_smoothing 1": ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
    "ema_decay 1": ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\) \(0 turns EMA off\)"),
    "drop_path 1": ({"drop_path": 1.0}, r"drop_path must be in \[0, 1\)"),
    "mixup -0.8": ({"mixup": -0.8}, r"mixup must be >= 0"),
    "cutmix -1": ({"cutmix": -1.0}, r"cutmix must be >= 0"),
    "betas [0.9, 1.0]": ({"betas": [0.9, 1.0]}, r"betas must be two numbers in \[0, 1\)"),
    "betas of three": ({"betas": [0.9, 0.99, 0.999]}, r"betas must be two numbers"),
    "randaugment_magnitude 11": ({"randaugment_magnitude": 11.0}, r"randaugment_magnitude must be in \[0, 10\]"),
    "randaugment_ops -1": ({"randaugment_ops": -1}, r"randaugment_ops must be >= 0"),
    "image_size 0": ({"image_size": 0}, r"image_size must be >= 1 \(leave it out for the default\), got 0"),
    "train_size 0": ({"train_size": 0}, r"train_size must be >= 1 \(leave it out for the default\)"),
    "val_size 0": ({"val_size": 0}, r"val_size must be >= 1"),
    "threads 0": ({"threads": 0}, r"threads must be >= 1 \(leave it out for torch's choice\)"),
    "epochs 0": ({"epochs": 0}, r"epochs must be a positive integer \(>= 1\), got 0"),
    "batch_size -8": ({"batch_size": -8}, r"batch_size must be a positive integer"),
    "accum_steps 0": ({"accum_steps": 0}, r"accum_steps must be a positive integer"),
    "num_workers -1": ({"num_workers": -1}, r"num_workers must be >= 0"),
    "checkpoint_every -5": ({"checkpoint_every": -5}, r"checkpoint_every must be >= 0"),
    "distractors -1": ({"distractors": -1}, r"distractors must be >= 0"),
    "seed -1": ({"seed": -1}, r"seed must be >= 0"),
    "routing random": ({"routing": "random"}, r"routing must be 'content' or 'local'"),
    "device tpu": ({"device": "tpu"}, r"device must be 'auto', 'cpu' or 'cuda'"),
    "model empty": ({"model": ""}, r"model must be a model name"),
}


@pytest.mark.parametrize("case", OUT_OF_RANGE, ids=list(OUT_OF_RANGE))
def test_values_out_of_range_are_refused(case):
    values, message = OUT_OF_RANGE[case]
    with pytest.raises(UsageError, match=message):
        TrainConfig(**values)


def test_every_problem_is_listed_at_once():
    with pytest.raises(UsageError, match=r"min_lr must be >= 0.*; weight_decay must be >= 0"):
        TrainConfig(min_lr=-1.0, weight_decay=-1.0)


def test_the_defaults_and_the_edges_of_each_range_are_allowed():
    TrainConfig()
    TrainConfig(clip_grad=1.0, min_lr=0.0, warmup_lr=0.0, warmup_epochs=0.0, weight_decay=0.0, mixup_prob=0.0,
                mixup_switch_prob=1.0, random_erasing=1.0, ema_decay=0.0, image_size=1, threads=1, epochs=1,
                lr=1)  # fmt: skip


FILES = {
    "TOML amp string": ("run.toml", 'amp = "false"\n', r"config file '.*run\.toml': .*amp must be true or false"),
    "TOML resume string": ("run.toml", 'resume = "false"\n', r"resume must be true or false"),
    "TOML epochs true": ("run.toml", "epochs = true\n", r"epochs must be an integer \(not a boolean\)"),
    "JSON amp string": ("run.json", '{"amp": "false"}', r"config file '.*run\.json': .*amp must be true or false"),
    "JSON negative clip": ("run.json", '{"clip_grad": -1}', r"clip_grad must be > 0"),
    "TOML syntax error": ("run.toml", "epochs = 3\nlr = = 1\n", r"config file '.*run\.toml': invalid TOML: .*line 2"),
    "JSON syntax error": ("run.json", '{\n "epochs": 3,\n}', r"config file '.*run\.json': invalid JSON at line 3"),
    "JSON not a table": ("run.json", "[1, 2]", r"expected a table of config fields, got list"),
    "unknown key": (
        "run.toml",
        "learning_rate = 1\n",
        r"unknown field\(s\) \['learning_rate'\]; allowed fields: "
        r"model, model_args, .*, lr, min_lr",
    ),  # fmt: skip
    "not UTF-8": ("run.toml", b"model = '\xff'\n", r"config file '.*run\.toml' is not UTF-8 text"),
}


@pytest.mark.parametrize("case", FILES, ids=list(FILES))
def test_config_files_name_the_file_and_the_problem(tmp_path, case):
    name, text, message = FILES[case]
    path = tmp_path / name
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    with pytest.raises(UsageError, match=message):
        TrainConfig.from_file(path)


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config file '.*nowhere\.toml' does not exist"):
        TrainConfig.from_file(tmp_path / "nowhere.toml")


COMMAND_LINES = {
    "train --image-size 0": (["train", "--image-size", "0"], r"image_size must be >= 1 \(leave it out"),
    "train --clip-grad -1": (["train", "--clip-grad", "-1"], r"clip_grad must be > 0"),
    "train --min-lr -1e-5": (["train", "--min-lr=-1e-5"], r"min_lr must be >= 0"),
    "train --warmup-lr -1": (["train", "--warmup-lr", "-1"], r"warmup_lr must be >= 0"),
    "train --weight-decay -1": (["train", "--weight-decay", "-1"], r"weight_decay must be >= 0"),
    "train --warmup-epochs -2": (["train", "--warmup-epochs", "-2"], r"warmup_epochs must be >= 0"),
    "train --mixup-prob 2": (["train", "--mixup-prob", "2"], r"mixup_prob is a probability"),
    "train --random-erasing 1.5": (["train", "--random-erasing", "1.5"], r"random_erasing is a probability"),
    "train --epochs 0": (["train", "--epochs", "0"], r"epochs must be a positive integer"),
    "train --threads 0": (["train", "--threads", "0"], r"threads must be >= 1"),
}


@pytest.mark.parametrize("case", COMMAND_LINES, ids=list(COMMAND_LINES))
def test_bad_flags_of_bralib_train_exit_2_in_one_line(tmp_path, capsys, case):
    argv, message = COMMAND_LINES[case]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bralib train: error: invalid training config: ") and len(err.splitlines()) == 1
    assert __import__("re").search(message, err) and not (tmp_path / "run").exists()


ARGPARSE_ZEROS = {
    "eval --batch-size 0": ["eval", "--checkpoint", "x.pt", "--batch-size", "0"],
    "eval --val-size 0": ["eval", "--checkpoint", "x.pt", "--val-size", "0"],
    "eval --num-workers -1": ["eval", "--checkpoint", "x.pt", "--num-workers", "-1"],
    "bench --batch 0": ["bench", "--batch", "0"],
    "bench --repeats 0": ["bench", "--repeats", "0"],
    "bench --warmup -1": ["bench", "--warmup", "-1"],
    "bench --threads 0": ["bench", "--threads", "0"],
    "bench --model-repeats 0": ["bench", "--model-repeats", "0"],
    "bench --batch two": ["bench", "--batch", "two"],
}


@pytest.mark.parametrize("case", ARGPARSE_ZEROS, ids=list(ARGPARSE_ZEROS))
def test_zero_never_means_default_on_the_command_line(capsys, case):
    argv = ARGPARSE_ZEROS[case]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    flag = argv[-2]
    assert f"argument {flag}: " in err and ("must be >= " in err or "expected an integer" in err)
    assert "leave the flag out for the default" in err or "expected an integer" in err
