"""Turning autocast off around the steps whose precision decides a discrete choice (which regions are routed)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def autocast_off(device: torch.device) -> AbstractContextManager:
    """Disable autocast on ``device``; a no-op where autocast does not exist (the meta device, for example).

    Shape-only passes (FLOP counting on the meta device) then run the same code as real ones.
    """
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()
