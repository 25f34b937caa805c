"""The Safeguards page's four labs, named once: which tabs it has and every control's default.

Each safeguard's technique lives in its own module, with its papers: ``uncertainty`` (per-token
entropy, calibration and temperature scaling), ``dpo`` (learning from preferences), ``privacy`` and
``accountant`` (DP-SGD, a canary's exposure, an output filter), ``bias`` (a template probe and
counterfactual augmentation). Each module's ``url_defaults`` gives its tab's controls (keys
``sg_unc_*``, ``sg_fb_*``, ``sg_dp_*``, ``sg_bias_*``); this module only joins them.
"""
from __future__ import annotations

TABS = ("Uncertainty", "Feedback", "Privacy", "Bias")  # the page's tabs, in order


def url_defaults() -> dict:
    """Every control of the page at its default (what a lesson starts from)."""
    from . import bias, dpo, privacy, uncertainty

    return {"sg_tab": TABS[0]} | uncertainty.url_defaults() | dpo.url_defaults() | privacy.url_defaults() \
        | bias.url_defaults()
