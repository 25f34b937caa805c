"""The page list: every page of the app, one entry each.

A page is one file in ``pages/`` plus one entry here. ``app.py`` builds its navigation from this
list, ``explorer.urlstate`` learns which URL parameters are not widgets, the lessons are checked
against it, ``scripts/screenshots.py`` takes its screenshots from each entry's recipes, and the
browser tests open every page it names.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from .registry import Registry


@dataclass(frozen=True)
class Shot:
    """One screenshot for the docs: ``docs/img/<name>.png`` of the page opened with ``query``."""
    name: str
    query: str  # "?lab_trained=1", "" for the plain page
    charts: int  # plotly charts to wait for before taking it
    caption: str  # one line for the gallery
    options: dict = field(default_factory=dict)  # browser context options, e.g. {"color_scheme": "dark"}


@dataclass(frozen=True)
class PageSpec:
    id: str  # the page's URL path ("" only for the default page's own path) and its name in lessons
    title: str
    file: str  # the script in pages/
    icon: str  # a Material icon
    prefix: str  # every session and URL key the page owns starts with this
    charts: int  # plotly charts it shows on first open, before any training or measuring (hidden tabs aside)
    reserved: tuple[str, ...] = ()  # URL parameters it sets that are not widgets (a finished view's flag)
    shots: tuple[Shot, ...] = ()
    default: bool = False  # the landing page, served at "/"
    order: int = 0
    defaults: str = ""  # "module:function" giving every control's default (a lesson starts from them)

    def url_defaults(self) -> dict:
        if not self.defaults:
            return {}
        module, name = self.defaults.split(":")
        return getattr(importlib.import_module(module), name)()

    @property
    def path(self) -> str:
        """The page's URL path, as a browser opens it."""
        return "/" if self.default else f"/{self.id}"


PAGES: Registry[PageSpec] = Registry("page", order=lambda p: p.order)
GLOBAL_PARAMS = ("lesson", "embed", "embed_options")  # URL parameters of the app itself, not of a page


def add(page: PageSpec) -> PageSpec:
    return PAGES.add(page.id, page)


add(PageSpec(
    "attention_lab", "Attention Lab", "pages/attention_lab.py", ":material/hub:", "lab_", charts=2,
    reserved=("lab_trained", "lab_from", "lab_b_trained"), default=True, order=0, defaults="explorer.lab:url_defaults", shots=(
        Shot("attention_lab", "?lab_trained=1", 3,
             "Attention Lab after training on reverse: the loss curve, the output shaded by probability, the "
             "anti-diagonal."),
        Shot("attention_lab_untrained", "", 2, "Attention Lab on first open: an untrained model's attention is a blur."),
        Shot("attention_lab_presentation", "?lab_trained=1&present=true", 3,
             "Presentation mode: bigger text for a projector, sidebar collapsed."),
        Shot("attention_lab_dark", "?lab_trained=1", 3,
             "The dark theme (the viewer's system setting, or the settings menu).", {"color_scheme": "dark"}),
    )))
add(PageSpec(
    "complexity", "Complexity", "pages/complexity.py", ":material/speed:", "cx_", charts=2,
    reserved=("cx_measured",), order=10, defaults="explorer.complexity:url_defaults", shots=(
        Shot("complexity", "", 2, "Complexity: attention FLOPs and memory in theory, before measuring."),
    )))
add(PageSpec(
    "positions", "Positional encodings", "pages/positions.py", ":material/straighten:", "pe_", charts=2,
    reserved=("pe_ran",), order=20, defaults="explorer.extrapolation:url_defaults", shots=(
        Shot("positions", "", 2, "Positional encodings: sinusoidal table and similarity, RoPE, ALiBi."),
    )))
add(PageSpec(
    "experts", "Mixture of experts", "pages/experts.py", ":material/alt_route:", "moe_", charts=1,
    reserved=("moe_trained", "moe_res_trained", "moe_fun_trained"), order=30, defaults="explorer.experts:url_defaults", shots=(
        Shot("experts", "?moe_trained=1", 4, "Mixture of experts after training: held-out loss against time for the "
             "mixture, the mixture without its balancing loss and a dense model; load imbalance; each expert's "
             "load; the routing of one input; which experts each task uses."),
        Shot("experts_residuals", "?moe_tab=Residuals+and+norms&moe_res_trained=1", 4,
             "Residuals and norms: pre-LN, post-LN and no residual trained side by side, each block's gradient at "
             "initialisation and the residual stream's size."),
        Shot("experts_funnel", "?moe_tab=Funnel&moe_fun_trained=1&moe_fun_level=1", 3,
             "Funnel: the loss of a funnel and a flat model, attention over merged pairs (each labelled with its "
             "characters), and time per step as the sequence grows."),
    )))
add(PageSpec(
    "multimodal", "Multimodal", "pages/multimodal.py", ":material/image:", "mm_", charts=2,
    reserved=("mm_trained",), order=40, defaults="explorer.multimodal:url_defaults", shots=(
        Shot("multimodal", "?mm_trained=1&mm_word=1", 3,
             "Multimodal after training: both fusion modes caption a scene; the attention that wrote the word "
             "\"red\" laid over the image's patches; the loss of both modes; held-out scores."),
        Shot("multimodal_untrained", "", 2, "Multimodal on first open: untrained captioners write nonsense and look "
                                            "everywhere."),
        Shot("multimodal_draw", "?mm_source=Draw", 2, "Multimodal's drawing tab: paint a scene in the world's colours "
                                                      "and have it captioned."),
    )))

add(PageSpec(
    "memory", "Memory", "pages/memory.py", ":material/memory:", "mem_", charts=3,
    reserved=("mem_turn", "mem_measured"), order=50, defaults="explorer.memory:url_defaults", shots=(
        Shot("memory", "", 3, "Memory: a conversation coloured by what the next character can still reach through "
                              "stacked windows, the measured change when each character is replaced, and each "
                              "layer's rolling cache."),
        Shot("memory_measured", "?mem_tab=Speed+and+memory&mem_measured=1", 1, "Memory after measuring: tokens per second and cache memory "
                                                       "against the context, cached and read again."),
    )))

add(PageSpec(
    "incontext", "In-context learning", "pages/incontext.py", ":material/repeat:", "icl_", charts=2,
    reserved=("icl_trained", "icl_fs_trained"), order=60, defaults="explorer.incontext:url_defaults", shots=(
        Shot("incontext", "?icl_trained=1", 5, "In-context learning after training: the repeated half's loss falls "
             "as an induction head forms; each head's induction and previous-token scores; the induction head's "
             "offset stripe and the previous-token head that feeds it."),
        Shot("incontext_ablated", "?icl_trained=1&icl_ablate=L0+H2", 5, "The causal check: with the previous-token "
             "head ablated, the induction head's stripe fades and its score falls."),
        Shot("incontext_untrained", "", 2, "In-context learning on first open: the untrained model's heads, no "
             "stripe yet."),
        Shot("incontext_fewshot", "?icl_tab=Few-shot&icl_fs_trained=1", 1, "Few-shot: accuracy on held-out letter "
             "mappings against the number of examples in the prompt."),
    )))

add(PageSpec(
    "training", "Training", "pages/training.py", ":material/model_training:", "tr_", charts=4,
    reserved=("tr_trained", "tr_cur_done", "tr_prec_done"), order=70, defaults="explorer.textlm:url_defaults", shots=(
        Shot("training", "?tr_trained=1", 4,
             "Training on text: the default character-level model trained on Jane "
             "Austen's Emma, its train and held-out loss, the learning-rate schedule with the current step marked, "
             "samples as it trained, what came out, and a sample written with it."),
        Shot("training_curriculum", "?tr_tab=Curriculum&tr_cur_done=1", 2,
             "Training, Curriculum: sequence lengths growing against fixed length, and both models' held-out loss "
             "against their training seconds, with what came out."),
        Shot("training_precision", "?tr_tab=Mixed+precision&tr_prec_done=1", 2,
             "Training, Mixed precision: bf16 autocast against fp32, time per step, both loss curves, and where "
             "each number of a bf16 step was held (measured)."),
    )))


add(PageSpec(
    "safeguards", "Safeguards", "pages/safeguards.py", ":material/shield:", "sg_", charts=2,
    reserved=("sg_unc_done", "sg_fb_done", "sg_dp_done", "sg_bias_done"), order=80,
    defaults="explorer.safeguards:url_defaults", shots=(
        Shot("safeguards", "?sg_unc_done=1&sg_unc_steps=100", 2,
             "Safeguards, Uncertainty: the Training page's character model after 100 steps on Emma writes text "
             "shaded by the entropy of each draw, uncertain characters flagged; its reliability diagram on held-out "
             "text, ECE and NLL against temperature with the fitted T marked, and temperature scaling before and "
             "after."),
        Shot("safeguards_feedback", "?sg_tab=Feedback&sg_fb_done=1&sg_fb_steps=20", 3,
             "Safeguards, Feedback: DPO on a character model of Emma preferring fewer letters 'e': the preference "
             "margin, the KL from the frozen reference and the policy's entropy, the win rate, and samples before "
             "and after."),
        Shot("safeguards_privacy", "?sg_tab=Privacy&sg_dp_done=1&sg_dp_steps=200&sg_dp_batch=32", 4,
             "Safeguards, Privacy: the accountant's ε against steps, held-out loss with and without DP-SGD, the "
             "canary's exposure in each, and the output filter with its misses."),
        Shot("safeguards_bias", "?sg_tab=Bias&sg_bias_done=1&sg_bias_skew=0.9&sg_bias_augment=true", 3,
             "Safeguards, Bias: a model trained on text skewed 90 % to one group word, probed on held-out "
             "sentences, beside the same model trained on counterfactually augmented text."),
    )))


def reserved_params() -> set[str]:
    """URL parameters that are not widgets: the app's own and every page's."""
    return set(GLOBAL_PARAMS).union(*(p.reserved for p in PAGES.values()))


def by_file(file: str) -> PageSpec:
    for page in PAGES.values():
        if page.file == file:
            return page
    raise KeyError(f"no page in the page list has the file {file!r}; pages: {', '.join(p.file for p in PAGES.values())}")
