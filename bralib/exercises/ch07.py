"""Checks for chapter 7, "Training BiFormer": the schedule, the mixed soft targets, the EMA update.

Each answer is compared with the function bralib.train uses, so passing means "same as the library".
"""

from __future__ import annotations

import torch

from bralib.exercises import Case, exercise


@exercise("lr_at_step")
def _lr_at_step():
    from bralib.train.optim import warmup_cosine

    hint = (
        "warm-up: warmup_lr + (lr - warmup_lr) * step / warmup_steps; "
        "then min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2"
    )
    schedule = dict(total_steps=110, warmup_steps=10, lr=1e-3, min_lr=1e-5, warmup_lr=1e-6)
    for step, what in [(0, "the first step"), (4, "mid warm-up"), (10, "the peak"), (60, "mid cosine"),
                       (109, "the last step")]:  # fmt: skip
        yield Case(f"{what} (step {step} of 110, 10 warm-up steps)", args=(step,), kwargs=schedule,
                   expected=warmup_cosine(step, **schedule), rtol=1e-9, atol=1e-12, hint=hint)  # fmt: skip
    no_warmup = dict(total_steps=5, warmup_steps=0, lr=0.1, min_lr=0.0, warmup_lr=0.0)
    yield Case("no warm-up: step 2 of 5 is half-way down the cosine", args=(2,), kwargs=no_warmup,
               expected=warmup_cosine(2, **no_warmup), rtol=1e-9, hint=hint)  # fmt: skip


@exercise("mix_targets")
def _mix_targets():
    from bralib.train.mixup import smooth_one_hot

    def reference(labels, num_classes, smoothing, lam):
        targets = smooth_one_hot(labels, num_classes, smoothing)
        return lam * targets + (1 - lam) * targets.flip(0)

    hint = "smooth first (smoothing / C everywhere, plus 1 - smoothing on the label), then mix with .flip(0)"
    for labels, classes, smoothing, lam in [
        ([0, 1, 1], 2, 0.0, 1.0),
        ([2, 0, 1, 3], 4, 0.1, 1.0),
        ([2, 0, 1, 3], 4, 0.0, 0.7),
        ([5, 9, 0, 5, 1], 10, 0.1, 0.35),
    ]:
        label_tensor = torch.tensor(labels)
        yield Case(
            f"labels {labels}, {classes} classes, smoothing {smoothing}, lam {lam}",
            args=(label_tensor, classes, smoothing, lam), expected=reference(label_tensor, classes, smoothing, lam),
            hint=hint,
        )  # fmt: skip


@exercise("ema_step")
def _ema_step():
    from bralib.train.ema import ModelEma

    hint = "d = min(decay, (1 + updates) / (10 + updates)); return d * average + (1 - d) * weights"
    for decay, updates in [(0.999, 1), (0.999, 100), (0.999, 5000), (0.5, 3)]:
        generator = torch.Generator().manual_seed(updates)
        average, weights = torch.randn(3, 4, generator=generator), torch.randn(3, 4, generator=generator)
        ema = ModelEma(torch.nn.Linear(1, 1), decay)
        ema.updates = updates
        d = ema.current_decay()
        yield Case(f"decay {decay}, update number {updates} (decay used: {d:.4g})",
                   args=(average, weights, decay, updates), expected=d * average + (1 - d) * weights,
                   hint=hint)  # fmt: skip


@exercise("ema_half_life")
def _ema_half_life():
    hint = "the smallest n with decay**n <= 0.5: n = ceil(log(0.5) / log(decay)); return an int"
    for decay, what in [(0.5, "decay 0.5: one update halves it"), (0.9, "decay 0.9"), (0.999, "decay 0.999"),
                        (0.99996, "decay 0.99996, the released recipe's"), (0.25, "decay 0.25")]:  # fmt: skip
        n = 1
        while decay**n > 0.5:  # the definition, counted
            n += 1
        yield Case(what, args=(decay,), expected=n, hint=hint)
