"""Top-1 / top-5 accuracy and loss over a loader, summed across processes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bralib.train.distributed import all_reduce_sum


@torch.no_grad()
def evaluate(
    model: nn.Module, loader, *, device: torch.device, amp_dtype: torch.dtype | None = None
) -> dict[str, float]:
    """Accuracy (%) and mean cross-entropy of ``model`` on every image of ``loader``.

    Under torchrun each rank reads its own share (no padding, no duplicates) and the sums are
    all-reduced, so the numbers equal a single-process evaluation. Top-5 is top-min(5, classes).
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top-1 hits, top-5 hits, images
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(images)  # (B, classes)
        k = min(5, logits.shape[-1])
        hits = logits.topk(k, dim=-1).indices == labels[:, None]  # (B, k)
        loss = F.cross_entropy(logits.float(), labels, reduction="sum")
        sums += torch.stack([loss.double(), hits[:, 0].sum().double(), hits.sum().double(),
                             torch.tensor(labels.shape[0], dtype=torch.float64, device=device)])  # fmt: skip
    all_reduce_sum(sums)
    model.train(was_training)
    count = max(sums[3].item(), 1.0)
    return {
        "loss": sums[0].item() / count,
        "top1": 100.0 * sums[1].item() / count,
        "top5": 100.0 * sums[2].item() / count,
        "images": int(sums[3].item()),
    }
