"""Lessons: named presets, each a small declarative structure: which page, which control values,
what to do on arrival (train, measure, run), and what to look at. Reachable from every page's
sidebar and by URL (``?lesson=<id>``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .bias import RECORD_EVERY as _BIAS_EVERY, TARGETS as _BIAS_TARGETS
from .encodings import ENCODINGS
from .methods import CurriculumSettings
from .privacy import CanarySettings, DPSettings
from .registry import Registry
from .tasks import TASKS


@dataclass(frozen=True)
class Lesson:
    id: str  # the URL's lesson=<id>
    title: str
    page: str  # the id of the page it opens, a name in explorer.pages.PAGES
    settings: dict = field(default_factory=dict)  # widget key -> value
    autorun: bool = False  # the page starts its heavy work on arrival (train, measure, run)
    explanation: str = ""  # markdown: what to look at


LESSONS: Registry[Lesson] = Registry("lesson")


def _add(lesson: Lesson) -> None:
    LESSONS.register(lesson.id)(lesson)


def view(lesson: Lesson) -> dict:
    """Every control of the lesson's page: its own settings over the page's defaults (None: let the
    page choose, e.g. the input follows the task's example). A lesson sets the whole view it needs."""
    from .pages import PAGES

    return {**PAGES[lesson.page].url_defaults(), **lesson.settings}


SHIPPED = ("This lesson's runs came with the app, already trained: the same code, settings and seed, trained once "
           "when the app was built (`scripts/shelf.py`), so the page opens on the finished runs; the times they "
           "report are that machine's. Their curves show the whole training. Change any setting and train to watch "
           "a run of your own learn.")


def set_by(lesson: Lesson) -> str:
    """What opening the lesson did to the controls, in words."""
    from .pages import PAGES

    prefix = PAGES[lesson.page].prefix
    shown = ", ".join(f"{k[len(prefix):].replace('_', ' ')} = {', '.join(v) if isinstance(v, list) else v}"
                      for k, v in lesson.settings.items())
    return (f"This lesson set {shown}, and every other control of the page to its default"
            + (" (your own input too: it follows the task's example)." if any(
                v is None for v in PAGES[lesson.page].url_defaults().values()) else "."))


_add(Lesson(
    "reverse", "Reverse a sequence: anti-diagonal attention", "attention_lab",
    {"lab_task": "reverse", "lab_length": 12, "lab_attention": "softmax", "lab_encoding": "learned",
     "lab_heads": 4, "lab_layers": 2},
    autorun=True,
    explanation="To write the answer backwards, the position that writes answer "
                "character *t* must read input character *L − 1 − t*. Drag **Show the model at step** (under "
                "*Rewind* in the sidebar) back to the start and forward again: the maps turn from a blur into an "
                "**anti-diagonal** (bottom-left to the middle) as the accuracy curve jumps; once trained, the page "
                "names the head where it is clearest. Then switch **Heads** to 1: the same weights read as one "
                "head, and the page says what that costs.",
))
_add(Lesson(
    "quadratic", "Why attention is quadratic", "complexity",
    {"cx_kinds": ["softmax", "sliding_window", "linear", "sdpa"], "cx_max_n": 4096},
    autorun=True,
    explanation="Each doubling of N quadruples full softmax's time and memory: on the log-log plots its line climbs "
                "with **slope 2**, the windowed and linear kinds with slope 1. Read the crossover column: below it, "
                "fixed overheads make the clever kernels *slower*.",
))
_COPY_BACK = TASKS["copy"].lookback(8)[0]
_add(Lesson(
    "windows", "Windows and sparsity", "attention_lab",
    {"lab_task": "copy", "lab_length": 8, "lab_attention": "sliding_window", "lab_window": 4, "lab_heads": 4},
    autorun=True,
    explanation="A window of **4** keys: each token sees itself and the 3 tokens before it, so the maps are a "
                f"**band**. Copying an input of 8 letters needs to look exactly {_COPY_BACK} tokens back (from the "
                f"position that writes an answer letter to the input letter it copies): a window of "
                f"{_COPY_BACK + 1} keys. Watch the model fail; then raise the window to {_COPY_BACK + 1}, or pick "
                "**block_sparse** (its strided hops reach further), and train again.",
))
_add(Lesson(
    "extrapolation", "Train short, test long", "positions",
    {"pe_task": "copy", "pe_train_len": 8},
    autorun=True,
    explanation=f"One model per positional encoding ({len(ENCODINGS)}), each trained on inputs of length 4–8 until it "
                "copies length 8 (95% of tokens right), then tested on 8, 16 and 32. Look at which lines stay up at "
                "16 and 32, at the steps each needed, and at the **learned** line that stops: a learned table has no "
                "rows past its training context.",
))
_add(Lesson(
    "induction", "Watch an induction head form", "incontext",
    {"icl_tab": "Induction heads"},
    autorun=True,
    explanation="A two-layer model with attention only learns sequences of random letters that repeat. The first half "
                "can never be predicted; the second can, by finding the earlier copy of the current letter and reading "
                "**what came next**. Watch the repeated half's loss: it falls slowly, then plunges — the **phase "
                "change** — just as the induction scores of layer 1 start to climb. Then ablate the layer-0 "
                "**previous-token head** the page names, and see the induction head's score fall with it.",
))
_add(Lesson(
    "window_memory", "What the window forgets", "memory",
    {"mem_attention": "sliding_window", "mem_window": 8, "mem_layers": 2},
    explanation="A sliding window of 8 keys in each of 2 layers: the next character can depend only on the last 15 of "
                "the conversation (each layer adds 7). The name in the first turn is struck through: replacing it "
                "changes nothing the model predicts, it is **forgotten**. Add a layer, widen the window, or switch to "
                "**softmax**, and watch the reach grow; then add turns until even softmax's context is full.",
))
_add(Lesson(
    "experts", "Experts specialise", "experts",
    {"moe_experts": 4, "moe_top_k": 1, "moe_aux": 0.01},
    autorun=True,
    explanation="Three models train on copy, reverse and sort at once: a mixture of 4 experts (each token goes to "
                "one), the same without its balancing loss, and a dense model with the same parameters per token. "
                "Watch the **load imbalance**: without the balancing loss the router is free to crowd the tokens "
                "onto a few experts. When training ends, read the table at the bottom: does each task's tag and "
                "answer go to experts of its own? The page says what came out, and how the dense model compares.",
))
_add(Lesson(
    "residuals", "Why residuals", "experts",
    {"moe_tab": "Residuals and norms", "moe_res_layouts": ["pre_ln", "no_residual"]},
    autorun=True,
    explanation="Two 6-block models learn to reverse a string side by side: one with the residual path (pre-LN), one "
                "without. Watch the loss: without the path, every block must carry everything forward and the "
                "gradient reaching the first block passes through all the others. Then add **post-LN** to the "
                "layouts and train again: the page says where its gradients are largest, and why.",
))
_add(Lesson(
    "fusion", "Where does the word look?", "multimodal",
    {"mm_things": 2, "mm_word": 1},
    autorun=True,
    explanation="Two captioners learn to describe scenes of shapes: one reads the image through **cross-attention**, "
                "one reads patches and words as **one sequence**. Word 1 is the first colour: its map starts as "
                "a uniform haze and, as they train, moves onto the thing it names. Then slide **Word** to the shape and to the "
                "second thing, and try a **Head** of its own: the table at the bottom says how often each mode is "
                "right on scenes it never saw, and how much of a colour word's attention lands on its thing.",
))
_CUR = CurriculumSettings()
_add(Lesson(
    "curriculum", "Does a curriculum help?", "training",
    {"tr_tab": "Curriculum"},
    autorun=True,
    explanation=f"Two copies of the same seeded model learn Emma in turns, {_CUR.steps} steps each: one on short "
                f"sequences, {_CUR.start} characters at first, growing to {_CUR.length} over the first "
                f"{_CUR.fraction:.0%} of its steps (a **sequence-length curriculum**), one at {_CUR.length} "
                "throughout. The left plot is that schedule. The right plot is each model's held-out loss, measured "
                "on the same windows at the full length, against its own training seconds: the curriculum's early "
                "steps read fewer characters (less compute per step); look whether that buys a lower loss at "
                "the same time. When both finish, the page says which is ahead, by how much, and why, even where "
                "that goes against the paper. Then switch **Positional encoding** to **rope** and compare again: a "
                "learned position table has rows that the short early sequences do not reach, so they stay untrained until the length grows.",
))

# ---- the Safeguards page: one lesson per tab (uncertainty, feedback, privacy, bias), each below its marker
# safeguards lesson: uncertainty
_add(Lesson(
    "uncertainty", "Does the model know when it is guessing?", "safeguards",
    {"sg_tab": "Uncertainty"},
    autorun=True,
    explanation="A character model learns Emma (the Training page's run, shared with it), then is measured on the "
                "last tenth of the novel, which it never trained on. First the text it writes: each character is "
                "shaded by the **entropy** of the distribution it was drawn from, and characters above **Flag above "
                "entropy** are outlined; move the threshold and see where the flags fall, at the start of a word or "
                "inside one. Then the **reliability diagram**: where the bars sit on the diagonal, the model is right "
                "as often as it says. Move **Temperature of the reliability diagram** to 0.5 and to 2 and watch the "
                "ECE. The table fits one temperature on one half of the held-out text and judges it on the other; "
                "*What came out* says what that fix changed, even when it is next to nothing.",
))
#
# safeguards lesson: feedback
_add(Lesson(
    "feedback", "Learning from feedback", "safeguards",
    {"sg_tab": "Feedback", "sg_fb_mode": "Fewer letter e (Emma)"},
    autorun=True,
    explanation="A small character model learns Emma, then DPO fine-tunes a copy of it on pairs of its own samples, "
                "preferring the one with fewer letters 'e', while a frozen copy (the reference) stays as it was. "
                "Watch the **win rate** against the reference and the **KL** from it as the steps go; at the end "
                "compare the samples before and after, and read what came out. Then set the **learning rate** to its "
                "largest and run again: the page measures the entropy, the KL and the distinct samples, and says "
                "whether the policy collapsed.",
))
#
# safeguards lesson: privacy
_DP = DPSettings()
_CANARY = CanarySettings()
_add(Lesson(
    "privacy", "Private training: DP-SGD against a planted secret", "safeguards",
    {"sg_tab": "Privacy"},
    autorun=True,
    explanation=f"A secret line, \"{_CANARY.template.format(_CANARY.secret)}\", is planted {_CANARY.times} times in the "
                "first part of Emma, and the same small model learns the text twice, in turns: once by **DP-SGD** "
                f"(each window's gradient clipped to norm {_DP.clip:g}, Gaussian noise of σ = {_DP.noise_multiplier:g} "
                f"times that, {_DP.steps} steps) and once without. The first chart needs no training: the accountant's "
                "ε for these settings, against steps. While both train, watch their held-out loss: the gap is what "
                "the privacy costs in quality. When both finish, the two histograms rank the planted secret among "
                "every other secret of its format: the further left of the pile it stands, the better the model "
                "remembers it (its **exposure**, in bits). The page then says what came out, with the numbers: "
                "whether DP lowered the exposure, by how much, and what the guarantee does not cover (a secret "
                "repeated in several windows). Then try σ = 0.5 or twice the steps and watch ε before you train. "
                "At the bottom, an output filter hides e-mails and numbers in text you type; its tables list what "
                "it misses.",
))
#
# safeguards lesson: bias
_add(Lesson(
    "bias", "Does a model copy the bias in its data?", "safeguards",
    {"sg_tab": "Bias", "sg_bias_skew": 0.9, "sg_bias_augment": True},
    autorun=True,
    explanation="The training text is generated with the skew at 0.9: each sentence about a target occupation "
                f"({', '.join(_BIAS_TARGETS)}) says the invented group word **zim** with probability 0.9, each about "
                "a counter occupation says **vor** with that probability. The table above the chart counts what the "
                "text really says. Two copies of one seeded model learn in turns: one on that text, one on the text "
                "plus a copy of every sentence with zim and vor swapped (**counterfactual augmentation**). Every "
                f"{_BIAS_EVERY} steps both are probed on sentences they never saw, cut just before the group word. Watch each "
                "model's probability of zim against its text's share, and read under **What came out** whether the "
                "skewed model matched, weakened or amplified the data's skew, what augmentation removed, and, where "
                "some lean is left, whether it is more than a different seed alone gives. Then move the skew to 0.5 "
                "and train again: a balanced text shows how far a model leans by chance.",
))
#
