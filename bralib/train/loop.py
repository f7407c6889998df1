"""``train(config)``: the whole training run, on a CPU, one GPU, or many processes under torchrun."""

from __future__ import annotations

import json
import math
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bralib.data import build_datasets, build_loader
from bralib.errors import UsageError
from bralib.io import write_text_atomic
from bralib.train import distributed
from bralib.train.checkpoint import load_checkpoint, load_model_state, rng_state, save_checkpoint, set_rng_state
from bralib.train.config import TrainConfig, config_differences
from bralib.train.ema import ModelEma
from bralib.train.evaluation import amp_dtype_for, evaluate
from bralib.train.mixup import Mixup, soft_target_cross_entropy
from bralib.train.model import build_model, load_weights
from bralib.train.optim import WarmupCosine, build_optimizer
from bralib.train.runlock import RunLock, RunLockedError
from bralib.train.runlog import RunLog

CHECKPOINT = "checkpoint.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """The state of one run and the steps that change it. ``train(config)`` is the way in."""

    def __init__(self, config: TrainConfig, info: distributed.DistInfo) -> None:
        self.config, self.info, self.device = config, info, info.device
        self.run_dir = Path(config.out)
        data = build_datasets(
            config.data, image_size=config.image_size or (64 if config.data == "digits-pairs" else 224),
            train_size=config.train_size, val_size=config.val_size, seed=config.seed, relation=config.relation,
            distractors=config.distractors, strokes=config.strokes,
            randaugment_ops=config.randaugment_ops, randaugment_magnitude=config.randaugment_magnitude,
            random_erasing=config.random_erasing,
        )  # fmt: skip
        self.num_classes = data.num_classes
        loader_args = dict(
            batch_size=config.batch_size,
            seed=config.seed,
            num_workers=config.num_workers,
            rank=info.rank,
            world_size=info.world_size,
            pin_memory=self.device.type == "cuda",
        )
        self.train_loader = build_loader(data.train, train=True, **loader_args)  # fmt: skip
        self.val_loader = build_loader(data.val, train=False, **loader_args)
        self.steps_per_epoch = len(self.train_loader.sampler) // config.batch_size // config.accum_steps
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"an epoch has {len(self.train_loader)} micro-batches per process, fewer than accum_steps="
                f"{config.accum_steps}: raise --train-size or lower --batch-size / --accum-steps"
            )
        self.total_steps = config.epochs * self.steps_per_epoch

        seed_everything(config.seed)  # the same initial weights on every rank
        self.model = build_model(config, self.num_classes)
        if config.init:  # fine-tuning: start from another run's weights (a resumed run then overwrites them)
            load_weights(self.model, config.init)
        self.model = self.model.to(self.device)
        self.ema = ModelEma(self.model, config.ema_decay) if config.ema_decay > 0 else None
        self.optimizer = build_optimizer(
            self.model, lr=config.lr, weight_decay=config.weight_decay, betas=config.betas,
            no_decay_keywords=config.no_decay_keywords,
        )  # fmt: skip
        warmup_steps = round(config.warmup_epochs * self.steps_per_epoch)
        self.scheduler = WarmupCosine(
            self.optimizer, total_steps=self.total_steps, warmup_steps=warmup_steps, lr=config.lr,
            min_lr=config.min_lr, warmup_lr=config.warmup_lr,
        )  # fmt: skip
        self.amp_dtype = amp_dtype_for(config, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.mixup = Mixup(
            self.num_classes, mixup_alpha=config.mixup, cutmix_alpha=config.cutmix, prob=config.mixup_prob,
            switch_prob=config.mixup_switch_prob, label_smoothing=config.label_smoothing,
        )  # fmt: skip
        self.step = 0
        self.metrics: dict[str, Any] = {}
        seed_everything(config.seed + 1 + info.rank)  # drop path and mixup differ across ranks
        self._maybe_resume()

        forward_model = torch.compile(self.model) if config.compile else self.model
        if info.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            forward_model = nn.parallel.DistributedDataParallel(forward_model, device_ids=device_ids)
        self.forward_model = forward_model
        self.log = RunLog(
            self.run_dir / "log.jsonl", enabled=info.is_main, resume_step=self.step if config.resume else None
        )
        if info.is_main:
            write_text_atomic(self.run_dir / "config.toml", config.to_toml())

    # --- checkpoints ------------------------------------------------------------------------------

    def _maybe_resume(self) -> None:
        path = self.run_dir / CHECKPOINT
        if not self.config.resume:
            if path.exists():
                raise FileExistsError(
                    f"{str(path)!r} exists: pass --resume to continue that run, or choose another --out"
                )
            return
        if not path.exists():
            if self.info.is_main:
                print(f"--resume: no checkpoint at {str(path)!r}, starting from step 0", file=sys.stderr)
            return
        payload = load_checkpoint(path, purpose="resume", what="--resume checkpoint")
        differences = config_differences(payload["config"], self.config.to_dict())
        if differences:
            raise UsageError(
                f"cannot resume from {str(path)!r}: it was written by a run with another config:\n  "
                + "\n  ".join(differences)
            )
        load_model_state(self.model, payload["model"], source=f"checkpoint {str(path)!r}")
        if self.ema is not None:
            self.ema.load_state_dict(payload["ema"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        self.step, self.metrics = payload["step"], payload.get("metrics", {})
        states = payload["rng"]
        if len(states) == self.info.world_size:
            set_rng_state(states[self.info.rank])
        elif self.info.is_main:
            print(
                f"resuming {len(states)}-process run on {self.info.world_size}: RNG streams re-seeded", file=sys.stderr
            )

    def _save_before_failing(self) -> None:
        """Write the checkpoint while an error propagates (one process only: others may not reach a collective)."""
        if self.info.distributed:
            return
        try:
            self.save()
        except Exception as err:  # the error being raised matters more; say why nothing was kept
            print(f"could not save a checkpoint before stopping: {err}", file=sys.stderr)

    def save(self) -> None:
        """All ranks call this (their RNG states are gathered); rank 0 writes."""
        states = distributed.all_gather_objects(rng_state())
        if not self.info.is_main:
            return
        epoch, done = divmod(self.step, self.steps_per_epoch)
        save_checkpoint(self.run_dir / CHECKPOINT, {
            "config": self.config.to_dict(),
            "num_classes": self.num_classes,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "data_position": {"epoch": epoch, "steps_done_in_epoch": done},
            "rng": states,
            "metrics": self.metrics,
        })  # fmt: skip

    # --- steps ------------------------------------------------------------------------------------

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """One optimizer step over ``accum_steps`` micro-batches; returns the mean loss over ranks."""
        total = torch.zeros((), device=self.device)
        for i, (images, labels) in enumerate(batches):
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            images, targets = self.mixup(images, labels)
            last = i == len(batches) - 1
            sync = nullcontext() if last or not self.info.distributed else self.forward_model.no_sync()
            with sync:
                with self.autocast():
                    logits = self.forward_model(images)  # (B, classes)
                loss = soft_target_cross_entropy(logits, targets)
                self.scaler.scale(loss / len(batches)).backward()
            total += loss.detach()
        if self.config.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.scheduler.step()
        self.step += 1
        mean_loss = distributed.all_reduce_sum(total / len(batches)).item() / self.info.world_size
        if not math.isfinite(mean_loss) and not self.scaler.is_enabled():
            raise FloatingPointError(f"loss became {mean_loss} at step {self.step}; try a lower --lr or --clip-grad")
        return mean_loss

    def micro_batches(self, epoch: int):
        """The epoch's optimizer steps not yet done, each a list of ``accum_steps`` micro-batches."""
        done = self.step - epoch * self.steps_per_epoch
        accum = self.config.accum_steps
        self.train_loader.sampler.set_epoch(epoch, start=done * accum * self.config.batch_size)
        group = []
        for batch in self.train_loader:
            group.append(batch)
            if len(group) == accum:
                yield group
                group = []
                done += 1
                if done == self.steps_per_epoch:
                    return

    def train_epoch(self, epoch: int) -> None:
        config, info = self.config, self.info
        self.model.train()
        on_terminal = sys.stderr.isatty()
        show = config.progress and info.is_main and on_terminal
        bar = tqdm(total=self.steps_per_epoch, initial=self.step - epoch * self.steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{config.epochs}", disable=not show, leave=False)  # fmt: skip
        lines = ProgressLines(self, epoch) if config.progress and info.is_main and not on_terminal else None
        images_per_step = config.batch_size * config.accum_steps * info.world_size
        tick = time.perf_counter()
        for batches in self.micro_batches(epoch):
            lr = self.scheduler.lr()
            loss = self.train_step(batches)
            now = time.perf_counter()
            seconds, tick = now - tick, now
            self.log.write("step", step=self.step, epoch=epoch, loss=loss, lr=lr,
                           images_per_s=images_per_step / seconds, seconds=seconds)  # fmt: skip
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
            if lines is not None:
                lines.step(loss, lr, images_per_step / seconds)
            end_of_epoch = self.step % self.steps_per_epoch == 0
            if config.checkpoint_every and self.step % config.checkpoint_every == 0 and not end_of_epoch:
                self.save()
        bar.close()

    def evaluate(self, epoch: int) -> dict[str, float]:
        for module in (self.model, self.ema.module if self.ema is not None else None):
            if module is not None:
                distributed.broadcast_buffers(module)  # every rank evaluates the model rank 0 will save
        metrics = {k: v for k, v in evaluate(self.model, self.val_loader, device=self.device,
                                             amp_dtype=self.amp_dtype).items()}  # fmt: skip
        if self.ema is not None:
            ema = evaluate(self.ema.module, self.val_loader, device=self.device, amp_dtype=self.amp_dtype)
            metrics.update({f"ema_{k}": v for k, v in ema.items() if k != "images"})
        self.metrics = {"epoch": epoch + 1, "step": self.step, **metrics}
        self.log.write("eval", **self.metrics)
        return self.metrics

    def run(self) -> dict[str, Any]:
        config = self.config
        start = time.perf_counter()
        for epoch in range(self.step // self.steps_per_epoch, config.epochs):
            self.train_epoch(epoch)
            if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
                try:
                    metrics = self.evaluate(epoch)
                except BaseException:  # a bad validation image, Ctrl-C: keep the epoch's training first
                    self._save_before_failing()
                    raise
                if self.info.is_main:
                    summary = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.endswith(("top1", "loss")))
                    elapsed = _duration(time.perf_counter() - start)
                    print(f"epoch {epoch + 1}/{config.epochs} step {self.step}: {summary} ({elapsed} elapsed)",
                          file=sys.stderr, flush=True)  # fmt: skip
            self.save()
        result = {**self.metrics, "steps": self.step, "seconds": time.perf_counter() - start,
                  "run_dir": str(self.run_dir), "world_size": self.info.world_size}  # fmt: skip
        if self.info.is_main:
            write_text_atomic(self.run_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
        return result


class ProgressLines:
    """Where stderr is not a terminal (a log file, CI), one plain line every ~10% of an epoch or 60 s."""

    def __init__(self, trainer: Trainer, epoch: int) -> None:
        self.trainer, self.epoch = trainer, epoch
        self.every = max(1, trainer.steps_per_epoch // 10)
        self.start = self.last = time.perf_counter()

    def step(self, loss: float, lr: float, images_per_s: float) -> None:
        trainer, now = self.trainer, time.perf_counter()
        done = trainer.step - self.epoch * trainer.steps_per_epoch
        if done % self.every and done != trainer.steps_per_epoch and now - self.last < 60:
            return
        self.last = now
        print(
            f"epoch {self.epoch + 1}/{trainer.config.epochs} step {done}/{trainer.steps_per_epoch}: loss {loss:.4f}, "
            f"lr {lr:.2e}, {images_per_s:.1f} images/s, {_duration(now - self.start)} elapsed",
            file=sys.stderr, flush=True,
        )  # fmt: skip


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def train(config: TrainConfig) -> dict[str, Any]:
    """Train ``config.model`` on ``config.data``; returns the final metrics (also in OUT/metrics.json).

    Rank 0 writes OUT/checkpoint.pt (every ``checkpoint_every`` steps and after every epoch),
    OUT/log.jsonl (every step and evaluation), OUT/config.toml and OUT/metrics.json. It holds OUT/.lock
    while the run lasts: a second run on the same OUT is refused, naming the first one's process.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    info = distributed.setup(config.device)
    lock = RunLock(config.out)
    try:
        refusal = None
        if info.is_main:
            try:
                lock.acquire()
            except RunLockedError as err:
                refusal = str(err)
        refusals = [r for r in distributed.all_gather_objects(refusal) if r]
        if refusals:  # every process stops, not only rank 0 (the others would wait for it forever)
            raise RunLockedError(refusals[0])
        return Trainer(config, info).run()
    finally:
        lock.release()
        distributed.cleanup()
