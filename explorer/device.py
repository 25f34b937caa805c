"""Where training runs: CUDA when a GPU is there, else the CPU, chosen automatically and shown.

``pick_device()`` is the one choice; ``describe(device)`` the sentence a page shows; ``model_device``
reads where a model's weights live, and ``move`` sends a batch there (a tensor, or a tuple of
them as the multimodal task's ``(images, words)``), so a model moved to CUDA trains there unchanged.
"""
from __future__ import annotations

import os

import torch
from torch import nn


def pick_device() -> torch.device:
    """CUDA (the first GPU) when torch sees one, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def cpu_cores() -> int:
    """Cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def describe(device: torch.device | str) -> str:
    """The device in words: ``"CUDA: NVIDIA H200"`` or ``"CPU, 2 cores (no CUDA GPU found)"``."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"CUDA: {torch.cuda.get_device_name(device)}"
    cores = cpu_cores()
    why = "" if not torch.cuda.is_available() else "; a CUDA GPU is present but not used"
    return f"CPU, {cores} core{'s' if cores != 1 else ''} ({'no CUDA GPU found' if not why else why[2:]})"


def model_device(model: nn.Module) -> torch.device:
    """Where the model's weights are (its first parameter's device)."""
    return next(model.parameters()).device


def move(batch, device: torch.device):
    """A tensor, or a (nested) tuple or list of tensors, on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(move(b, device) for b in batch)
    return batch


def cpu_bf16_instructions() -> list[str]:
    """The CPU's bfloat16 matrix instructions that the operating system reports (``amx_bf16``,
    ``avx512_bf16``); empty where there are none or the system does not say."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
