"""``bralib predict`` on the committed example images with the committed nano checkpoint."""

from __future__ import annotations

import pytest
from PIL import Image

from bralib.cli import main
from bralib.export.predict import spread_regions

EXPECTED = """\
docs/examples/digits_pair_val36_label9.png
  1.  88.5 %  9
  2.   2.8 %  5
  3.   2.2 %  3
  4.   1.9 %  4
  5.   1.4 %  8
docs/examples/digits_pair_val9_label7.png
  1.  80.6 %  7
  2.   5.1 %  9
  3.   3.9 %  1
  4.   2.3 %  4
  5.   2.1 %  8
"""


def test_predict_prints_a_stable_top5_and_draws_the_routing(repo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(repo_root)
    figure = tmp_path / "routing.png"
    images = ["docs/examples/digits_pair_val36_label9.png", "docs/examples/digits_pair_val9_label7.png"]
    checkpoint = "experiments/checkpoints/biformer_nano_digits.pt"
    argv = ["predict", *images, "--checkpoint", checkpoint, "--routing-figure", str(figure)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(EXPECTED)  # the labels and, to 0.1 %, the probabilities; both true labels come first
    assert "stage 3, block 2, 2x2 regions, top-2, query regions [0, 1, 2, 3]" in out
    with Image.open(figure) as image:
        assert image.width > 3 * image.height / 2 > 300  # two rows of five panels


def test_predict_names_a_bad_stage_and_a_missing_image(repo_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(repo_root)
    common = ["--checkpoint", "experiments/checkpoints/biformer_nano_digits.pt"]
    image = "docs/examples/digits_pair_val9_label7.png"
    assert main(["predict", image, *common, "--routing-figure", str(tmp_path / "r.png"), "--routing-stage", "4"]) == 2
    assert "stages that route, [1, 2, 3]" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nothing.png"), *common]) == 2
    assert "nothing.png" in capsys.readouterr().err


@pytest.mark.parametrize(("n_win", "count", "expected"), [(2, 4, [0, 1, 2, 3]), (7, 4, [0, 16, 32, 48]), (4, 1, [0])])
def test_spread_regions(n_win, count, expected):
    assert spread_regions(n_win, count) == expected
