"""Mixed precision: the matrix multiplies in bfloat16, everything that needs range or accumulation
in float32.

Micikevicius et al. 2018, "Mixed Precision Training" (float32 master weights, half-precision
arithmetic); Kalamkar et al. 2019, "A Study of BFLOAT16 for Deep Learning Training" (bfloat16 keeps
float32's exponent range, so no loss scaling is needed).

A ``Precision`` is chosen by name from ``PRECISIONS``: ``fp32`` (everything float32) or ``bf16``
(``torch.autocast`` to bfloat16 on the model's device type, CPU or CUDA). The forward pass runs
under autocast, the backward pass outside it; the parameters stay float32, so their gradients and
AdamW's moments are float32 too. Autocast chooses per operation: on CPU in torch 2.13 it runs the
linear layers and matrix products in bfloat16, but not softmax or LayerNorm on bfloat16 input
(those it leaves in bfloat16), so our kernels upcast: the norms (``explorer.blocks``) and every
softmax (``explorer.attention``) compute in float32 and cast back.

``precision_report(model, x, y, precision)`` runs one real training step on a copy of the model
and lists the dtype of every place that matters (activations, attention weights, norm outputs,
logits, loss, gradients, AdamW state, and the softmax inside torch's fused attention kernel,
measured by its error), so the page's sentences come from what ran, not from a table.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import Registry


@dataclass(frozen=True)
class Precision:
    name: str
    title: str  # for menus and legends
    dtype: Optional[torch.dtype]  # autocast's dtype; None: no autocast, everything float32
    summary: str  # one line for the page

    def autocast(self, device_type: str):
        """The context the forward pass runs in on a device of ``device_type`` ("cpu", "cuda")."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)


PRECISIONS: Registry[Precision] = Registry("precision")
PRECISIONS.add("fp32", Precision("fp32", "fp32", None, "every number float32 (32 bits: 8 exponent, 23 mantissa)"))
PRECISIONS.add("bf16", Precision("bf16", "bf16 mixed", torch.bfloat16,
                                 "matrix multiplies in bfloat16 (16 bits: float32's 8 exponent bits, 7 mantissa "
                                 "bits) under autocast; weights, norms, softmax, loss and optimizer state float32"))


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# Places of the report, in the order of a training step. Each entry: (where, dtype name).
EMBED, RESIDUAL, NORMS_OUT, QKV, WEIGHTS, FUSED_SOFTMAX, HEAD_OUT, ATTN_OUT, MLP_OUT, LOGITS, LOSS, GRADS, \
    ADAM, PARAMS = ("token embeddings", "residual stream", "norm outputs", "queries, keys, values",
                    "attention weights (softmax)", "softmax inside torch's fused attention", "heads' weighted values",
                    "attention output projection", "MLP output", "logits", "loss", "gradients",
                    "AdamW moments", "weights")
FP32_PLACES = (NORMS_OUT, WEIGHTS, FUSED_SOFTMAX, LOSS, ADAM)  # where the page says precision stays float32


def _one(dtypes) -> str:
    names = sorted({dtype_name(d) for d in dtypes})
    return names[0] if len(names) == 1 else " and ".join(names)


def fused_softmax_dtype(dtype: torch.dtype, device: torch.device | str = "cpu") -> str:
    """The precision in which torch's fused ``scaled_dot_product_attention`` computes its softmax on
    ``dtype`` inputs, measured: its error against exact attention is compared with that of softmax
    computed in float32 and of softmax computed in ``dtype`` (both then multiplied in ``dtype``)."""
    if dtype == torch.float32:
        return "float32"
    g = torch.Generator().manual_seed(0)
    q, k, v = (2 * torch.randn(2, 4, 128, 32, generator=g) for _ in range(3))
    q, k, v = (t.to(device=device, dtype=dtype) for t in (q, k, v))
    mask = torch.ones(128, 128, dtype=torch.bool, device=q.device).tril()
    exact_w = torch.softmax((q.float() @ k.float().transpose(-1, -2) / math.sqrt(32)).masked_fill(~mask, -1e9), -1)
    exact = exact_w @ v.float()
    low_w = torch.softmax((q @ k.transpose(-1, -2) / math.sqrt(32)).masked_fill(~mask, -1e9), -1)  # in dtype
    err = lambda out: float((out.float() - exact).abs().mean())  # noqa: E731
    fused = err(F.scaled_dot_product_attention(q, k, v, is_causal=True))
    with_fp32 = err(exact_w.to(dtype) @ v)
    with_low = err(low_w @ v)
    return "float32" if abs(fused - with_fp32) < abs(fused - with_low) else dtype_name(dtype)


def precision_report(model: nn.Module, x: Tensor, y: Tensor, precision: str) -> list[tuple[str, str]]:
    """Run one AdamW training step of a copy of ``model`` on ``(x, y)`` under ``precision`` and list
    ``(where, dtype name)`` for each place of the step (the model itself is untouched)."""
    prec = PRECISIONS[precision]
    model = copy.deepcopy(model).train()
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    norms = [m for name, m in model.named_modules() if name.split(".")[-1] in ("ln_1", "ln_2", "ln_f")]
    seen: list[torch.dtype] = []
    handles = [m.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype)) for m in norms]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    try:
        with prec.autocast(device.type):
            out = model(x, y, capture=True)
        out.objective.backward()
        opt.step()
    finally:
        for h in handles:
            h.remove()
    t = out.trace
    pick = lambda suffix: [v.dtype for k, v in t.items() if k.endswith(suffix)]  # noqa: E731
    state = [s for p in model.parameters() for s in (opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"])]
    report = [
        (EMBED, _one(pick("embed"))),
        (RESIDUAL, _one(pick("resid_pre") + pick("resid_mid") + pick("resid_post"))),
        (NORMS_OUT, _one(seen)),
        (QKV, _one(pick("attn.q") + pick("attn.k") + pick("attn.v"))),
        (WEIGHTS, _one(pick("attn.pattern"))),
    ]
    if getattr(model, "config", None) is not None and model.config.attention == "softmax":
        report.append((FUSED_SOFTMAX, fused_softmax_dtype(prec.dtype or torch.float32, device)))
    report += [
        (HEAD_OUT, _one(pick("attn.z"))),
        (ATTN_OUT, _one(pick("attn_out"))),
    ]
    if pick("mlp_out"):
        report.append((MLP_OUT, _one(pick("mlp_out"))))
    report += [
        (LOGITS, _one(pick("logits"))),
        (LOSS, dtype_name(out.loss.dtype)),
        (GRADS, _one(p.grad.dtype for p in model.parameters() if p.grad is not None)),
        (ADAM, _one(s.dtype for s in state)),
        (PARAMS, _one(p.dtype for p in model.parameters())),
    ]
    return report


def report_sentences(report: list[tuple[str, str]], precision: str) -> list[str]:
    """The page's sentences, from a report: what ran in which dtype."""
    prec = PRECISIONS[precision]
    by: dict[str, list[str]] = {}
    for where, dtype in report:
        by.setdefault(dtype, []).append(where)
    out = [f"**{dtype}**: {', '.join(places)}." for dtype, places in by.items()]
    if prec.dtype is not None:
        low = dtype_name(prec.dtype)
        kept = [w for w in FP32_PLACES if dict(report).get(w) == "float32"]
        lost = [w for w in FP32_PLACES if w in dict(report) and dict(report)[w] != "float32"]
        out.append(f"Under {prec.title} the matrix multiplies ran in {low}; precision stayed float32 in "
                   f"{', '.join(kept)}" + (f", but not in {', '.join(lost)}." if lost else "."))
    return out
