"""The words the app uses, explained once, reachable from every page (the shell's Glossary)."""
from __future__ import annotations

from .attention import ATTENTION
from .encodings import ENCODINGS

TERMS = {
    "token": "One unit the model reads and writes: here one character (a letter, '=', a space, a full stop).",
    "embedding": "The vector a token starts as: one learned row per token (and, with a table encoding, one per "
                 "position added to it).",
    "residual stream": "The vector each token carries from layer to layer. Every attention and every MLP reads it "
                       "and adds its result to it; the last one is turned into next-token scores.",
    "attention": "Each position (a query) scores earlier positions (keys), turns the scores into weights that "
                 "sum to 1 (softmax) and takes the weighted sum of their values.",
    "query, key, value": "Three projections of each token's residual stream: the query asks, the keys are matched "
                         "against it, the values are what the weights average.",
    "head": "One attention computation with its own queries, keys and values. Several heads run side by side, "
            "each in its own slice of the width, and look for different things.",
    "head size": "The width of one head (d_h = width / heads).",
    "causal": "A position may only look at itself and earlier positions, never at later ones: what a model that "
              "writes left to right needs.",
    "pattern": "Which keys each query may look at, as a matrix of allowed (query, key) pairs.",
    "window": "A sliding window: each query looks only at the last w positions, itself included.",
    "w_min": "The dynamic window's smallest width: w = max(w_min, ⌈2√T_ctx⌉), T_ctx being the model's context.",
    "context": "The longest sequence a model reads at once (its block size).",
    "key/value cache": "What a model keeps while it writes: each layer's keys and values of the positions read so "
                       "far, so a new token is read alone instead of the whole text again. A window keeps only the "
                       "last w; linear attention keeps a running state of fixed size.",
    "receptive field": "The earlier positions that can change a position's output. With windows of w keys in L "
                       "stacked layers it reaches L (w − 1) positions back.",
    "induction head": "A head that attends from a token to the position just after an earlier copy of that token, "
                      "and copies what it finds there: it continues patterns seen earlier in the context.",
    "previous-token head": "A head that attends from each position to the one before it; an induction head reads "
                           "through it.",
    "ablation": "Removing one part (here: zeroing one head's output) and measuring what changes: a causal check.",
    "few-shot": "Learning a task from a few examples in the prompt, with no change to the weights.",
    "φ (phi)": "Linear attention's feature map, φ(x) = elu(x) + 1: positive features whose dot products stand in "
               "for softmax's exponentials.",
    "positional encoding": "How a model learns where a token is: a table added to the embeddings (sinusoidal, "
                           "learned), a rotation of queries and keys (RoPE), or a penalty on distant keys (ALiBi).",
    "nats": "The unit of the loss: cross-entropy with the natural logarithm. A loss of ln 26 ≈ 3.26 nats is a uniform "
            "guess among 26 letters; 0 is certainty of the right answer.",
    "token accuracy": "The share of answer characters the model ranks first, given the right characters before them.",
    "FLOPs": "Floating-point operations: a multiply-add counts 2. Here, those of the attention's matrix products, "
             "masked-out scores included.",
    "sdpa": "PyTorch's fused scaled_dot_product_attention: the same result as softmax attention, computed tile by "
            "tile without storing the N × N matrix.",
    "log-log slope": "On logarithmic axes a cost c·N^p is a straight line of slope p: 2 is quadratic, 1 linear.",
    "logit lens": "Reading the residual stream after each block as if it were the last (final LayerNorm, then the "
                  "unembedding): which next token each layer already points to.",
    "extrapolation": "Working on inputs longer than any seen in training.",
    "seed": "The number that fixes every random choice (weights, data): the same seed gives the same picture.",
    "step": "One update of the weights, from one batch of 64 training examples.",
    "mixture of experts": "A feed-forward layer made of several MLPs (experts); a router sends each token to a few "
                          "of them, so the model has more parameters than one token uses (Shazeer et al. 2017).",
    "router": "The small linear layer of a mixture of experts that scores every expert for a token; a softmax turns "
              "the scores into probabilities (gates).",
    "top-k": "How many experts each token is sent to: 1 in Switch Transformer, 2 in GShard and Mixtral.",
    "capacity factor": "How many tokens one expert may take from a batch, as a multiple of a fair share "
                       "(top-k × tokens ÷ experts); tokens beyond it are dropped and only their residual path carries "
                       "them on.",
    "balancing loss": "Switch Transformer's auxiliary loss, experts × Σ (share of tokens sent to e) × (mean gate of "
                      "e): 1 when routing is even, larger as it crowds onto few experts.",
    "active parameters": "The parameters one token actually uses: in a mixture of experts, only those of the "
                         "experts it is sent to.",
    "coefficient of variation": "Standard deviation divided by mean: here of the experts' loads, 0 when every "
                                "expert takes the same share.",
}


def entries() -> list[tuple[str, str]]:
    """Every term with its explanation, alphabetically; each attention kind and encoding in its own words."""
    out = dict(TERMS)
    for kind in ATTENTION.values():
        out[kind.name] = f"Attention kind: {kind.summary} ({kind.paper})."
    for cls in ENCODINGS.values():
        out[f"{cls.name} (encoding)"] = f"{cls.summary[0].upper()}{cls.summary[1:]} ({cls.paper})."
    return sorted(out.items(), key=lambda item: item[0].lower())


def markdown() -> str:
    return "\n".join(f"- **{term}** — {text}" for term, text in entries())
