"""Writes the example images of ``bralib predict`` (docs/deploy.md, tests/export) and the routing figure of deploy.md.

Run from the repository root: ``python docs/examples/make_examples.py``. Each image is a 64x64 RGB PNG of
``DigitsPairs("val", relation="partner")`` (seed 0), the task the committed nano checkpoint was trained on,
so the label is the digit that shares the tint of the marked cue (the one with the white dot). The figure is
what ``bralib predict IMAGES --checkpoint experiments/checkpoints/biformer_nano_digits.pt --routing-figure``
draws, reduced to 256 colours.
"""

from pathlib import Path

import numpy as np
from PIL import Image

from bralib.data.digits_pairs import DigitsPairs
from bralib.export.predict import load_images, load_predictor, predict, routing_figure

EXAMPLES = (36, 9)  # validation indices; labels 9 and 7, both predicted right by the committed checkpoint
HERE = Path(__file__).parent
CHECKPOINT = HERE.parent.parent / "experiments" / "checkpoints" / "biformer_nano_digits.pt"


def main() -> None:
    dataset = DigitsPairs("val", 64, seed=0, relation="partner", distractors=2)
    paths = []
    for index in EXAMPLES:
        image, label = dataset[index]
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        paths.append(HERE / f"digits_pair_val{index}_label{label}.png")
        Image.fromarray(pixels).save(paths[-1], optimize=True)
        print(f"{paths[-1]}: {paths[-1].stat().st_size} bytes, label {label}")
    predictor = load_predictor(CHECKPOINT)
    images = load_images(paths)
    figure = HERE / "routing_nano_digits.png"
    routing_figure(predictor, images, predict(predictor, images, [p.name for p in paths]), figure)
    with Image.open(figure) as drawn:
        drawn.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(figure, optimize=True)
    print(f"{figure}: {figure.stat().st_size} bytes")


if __name__ == "__main__":
    main()
