"""Learned absolute positions (GPT-2, Radford et al. 2019): one trainable vector per position."""
from __future__ import annotations

from torch import nn

from .. import figures
from ..positions import cosine_similarity, pca_2d
from ..view import Caption, Columns, Figure, Markdown, Note, Section
from ._base import PositionalEncoding, PositionTooFar, register


@register("learned")
class LearnedEncoding(PositionalEncoding):
    order = 10
    title = "Learned"
    summary = "one trainable vector per position, added to the token embeddings"
    paper = "Radford et al. 2019, GPT-2"
    extrapolates = False
    offsets_only = False  # a row per absolute position

    def __init__(self, config):
        super().__init__(config)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)

    def embed(self, T, device=None):
        rows = self.wpe.num_embeddings
        if T > rows:
            raise PositionTooFar(
                f"learned position embeddings have {rows} rows (positions 0-{rows - 1}); this sequence needs "
                f"{T}. A learned table cannot represent positions it never had"
            )
        return self.wpe.weight[:T]

    @classmethod
    def section(cls):
        return Section("Learned", (), _view, context=("experiment",))


def _view(v: dict, experiment=None) -> list:
    intro = Markdown("A learned table is one trainable vector per position, nothing more: whatever structure it "
                     "has comes from training. It has no row past its training context, so it cannot say "
                     "anything about a position it never had.")
    rows = experiment.learned_rows() if experiment is not None else None
    if rows is None:
        return [intro, Note("Run the experiment below with **learned** among the encodings to see the table it "
                            "learned.", ":material/model_training:")]
    table = experiment.learned_table
    return [
        intro,
        Columns([
            [Figure(figures.matrix_figure(cosine_similarity(table), "cosine similarity of learned positions",
                                          "position", "position"), "pe_l_sim",
                    "Cosine similarity between the learned rows of every pair of positions.")],
            [Figure(figures.scatter_positions(pca_2d(table), "positions projected to 2-D"), "pe_l_pca",
                    "Each learned position projected on the table's two main directions.")],
        ]),
        Figure(figures.lines_figure(
            {"moved / initial norm": (rows["position"], rows["moved"]),
             "share of training sequences reaching it": (rows["position"], rows["reached"])},
            "how far each row moved in training, measured", "position (row)", "ratio", height=300),
            "pe_l_moved", "For each row: the distance it moved from its random start, relative to its initial "
                          "length, and the share of training sequences long enough to use it."),
        Caption(experiment.learned_finding()),
    ]
