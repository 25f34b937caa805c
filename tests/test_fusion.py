"""The multimodal captioner: patches, masks, where the maps come from, and that it learns."""
import dataclasses

import numpy as np
import pytest
import torch

from explorer import multimodal as mm
from explorer import scenes
from explorer.attention import ATTENTION
from explorer.fusion import FUSIONS, FusionConfig, build, patchify, prefix_lm_mask, sincos_2d, unpatchify

torch.set_num_threads(1)


def example(n=4, seed=3):
    images, captions, truth = scenes.batch("held_out", n, seed)
    return images, captions[:, :-1], truth


@pytest.mark.parametrize("patch", [4, 8, 16])
def test_patchify_and_its_inverse(patch):
    images = torch.rand(2, 3, scenes.SIZE, scenes.SIZE)
    p = patchify(images, patch)
    g = scenes.SIZE // patch
    assert p.shape == (2, g * g, 3 * patch * patch)
    assert torch.equal(unpatchify(p, patch, scenes.SIZE, scenes.SIZE), images)
    # patch k is the square at row k // g, column k % g, channel first
    k = g + 1
    r, c = divmod(k, g)
    square = images[0, :, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch]
    assert torch.equal(p[0, k], square.reshape(-1))


def test_a_things_patches_hold_its_pixels():
    thing = scenes.Thing("square", "red", 1, 2)
    image = scenes.to_tensor([scenes.render(scenes.make_scene([thing]))])
    p = patchify(image, 8)
    background = torch.tensor(scenes.BACKGROUND) / 255
    differs = (p[0].view(-1, 3, 64) - background[None, :, None]).abs().sum((1, 2)) > 0.5
    assert set(torch.nonzero(differs).flatten().tolist()) <= set(scenes.patches_of(thing, 8))


def test_2d_sines_tell_every_patch_apart():
    pe = sincos_2d(6, 64)
    assert pe.shape == (36, 64)
    assert torch.cdist(pe, pe).add(torch.eye(36)).min() > 0.1
    # the first half encodes the row only: patches in one row share it
    assert torch.equal(pe[0, :32], pe[5, :32]) and not torch.equal(pe[0, 32:], pe[5, 32:])


def test_prefix_lm_mask():
    m = prefix_lm_mask(3, 4)
    assert m[:, :3].all()  # everyone sees every patch
    assert not m[:3, 3:].any()  # no patch sees a word
    words = m[3:, 3:]
    assert torch.equal(words, torch.tril(torch.ones(4, 4, dtype=torch.bool)))  # words: themselves and earlier


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_maps_are_the_weights_the_model_used(fusion):
    model = build(FusionConfig(fusion=fusion), seed=1)
    images, words, _ = example()
    trace = model((images, words), capture=True).trace
    patterns = [n for n in trace if n.endswith(".pattern")]
    assert patterns
    for name in patterns:  # every attention's output is its pattern applied to its values
        z, v = trace[name.replace(".pattern", ".z")], trace[name.replace(".pattern", ".v")]
        assert torch.allclose(trace[name] @ v, z, atol=1e-5)
    if fusion == "cross":
        for i in range(model.config.dec_layers):
            w = trace[f"dec.{i}.cross.pattern"]
            assert w.shape == (4, 4, words.shape[1], model.config.n_patches)
            assert torch.allclose(w.sum(-1), torch.ones(()), atol=1e-5)  # over the patches
            assert trace[f"dec.{i}.cross.v"].shape[2] == model.config.n_patches  # the values are the patches'

        # zeroing the cross-attention's weights changes the output: the map is on the path
        cut = model((images, words), edit={"dec.*.cross.pattern": torch.zeros_like}).logits
        assert not torch.allclose(cut, model((images, words)).logits)
    else:
        N = model.config.n_patches
        for name in patterns:
            w = trace[name]
            allowed = prefix_lm_mask(N, words.shape[1])
            assert (w[..., ~allowed] == 0).all()
            assert (w[:, :, N:, :N] > 0).all()  # every word sees every patch
            assert torch.allclose(w.sum(-1), torch.ones(()), atol=1e-5)


@pytest.mark.parametrize("fusion", FUSIONS.names())
def test_words_are_causal_and_read_the_image(fusion):
    model = build(FusionConfig(fusion=fusion), seed=2).eval()
    images, words, _ = example()
    base = model((images, words)).logits
    changed = words.clone()
    changed[:, 5:] = scenes.VOCAB.index("yellow")
    after = model((images, changed)).logits
    assert torch.allclose(base[:, :5], after[:, :5], atol=1e-5)  # earlier words never see later ones
    other = model((images.flip(0), words)).logits
    assert not torch.allclose(base, other, atol=1e-3)  # the image reaches every word


def test_the_words_self_attention_is_the_registrys_kind():
    cfg = FusionConfig(attention="sliding_window")
    model = build(cfg)
    images, words, _ = example()
    trace = model((images, words), capture=["dec.0.attn.pattern"]).trace
    allowed = ATTENTION["sliding_window"].pattern(words.shape[1], cfg.text_config())
    assert (trace["dec.0.attn.pattern"][..., ~allowed] == 0).all()
    assert not allowed.tril().all()  # the window really cuts the causal triangle


def test_unknown_hook_names_fail_with_the_valid_ones():
    model = build(FusionConfig())
    with pytest.raises(KeyError, match="dec.0.cross.pattern"):
        model(example()[:2], capture=["dec.0.crosss.pattern"])


def test_attention_weights_per_head_count():
    c = FusionConfig()
    N, T = c.n_patches, scenes.CAPTION_TOKENS - 1
    assert mm.attention_scores(c) == c.enc_layers * N * N + c.dec_layers * (T * T + T * N)
    e = dataclasses.replace(c, fusion="early")
    assert mm.attention_scores(e) == (e.enc_layers + e.dec_layers) * (N + T) ** 2


def test_problems_are_named():
    assert "fusion" in FusionConfig(fusion="late").problem()
    assert "patch" in FusionConfig(patch=7).problem()
    assert "heads" in FusionConfig(n_head=5).problem()
    assert FusionConfig().problem() is None
    assert mm.MultimodalSettings(fusions=()).problem()


def test_score_against_hand_made_captions():
    a = scenes.make_scene([scenes.Thing("circle", "red", 0, 0), scenes.Thing("square", "yellow", 0, 2)])
    b = scenes.make_scene([scenes.Thing("triangle", "green", 1, 1)])
    right = [scenes.caption(a), scenes.caption(b)]
    s = mm.score(right, [a, b])
    assert (s.exact, s.colour, s.shape, s.relation, s.count) == (1, 1, 1, 1, 1)
    wrong = [["a", "red", "square", "above", "a", "yellow", "square"], ["a", "a", "a"]]
    s = mm.score(wrong, [a, b])
    assert s.exact == 0 and s.colour == 2 / 3 and s.shape == 1 / 3 and s.relation == 0 and s.count == 0.5


def test_word_maps_follow_the_words():
    model = build(FusionConfig(fusion="cross"))
    images, _, truth = example(1)
    words = scenes.caption(truth[0])
    wm = mm.word_maps(model, images[0], words)
    assert wm.words == words
    assert wm.maps.shape == (2, 4, len(words), 36)
    assert wm.sums_to_one


@pytest.fixture(scope="module")
def small_run():
    """A test-sized run of the page's training job (about 12 s)."""
    s = mm.MultimodalSettings(fusions=("cross",), steps=320, batch_size=32, until_learned=False)
    return s, mm.train_alone(s, "cross")


def test_training_beats_the_caption_frequency_baseline(small_run):
    """The model learns to read the image: better than always saying the commonest caption."""
    _, run = small_run
    got = mm.evaluate_captions(run.model, n=128)
    _, base = mm.frequency_baseline(n=128)
    assert got.colour > base.colour + 0.25
    assert got.shape > base.shape + 0.2
    assert got.exact > base.exact + 0.15
    assert run.history[-1][1] < run.history[0][1] / 3


def test_colour_words_learn_to_look_at_the_thing_they_name(small_run):
    """The lesson's claim: a colour word's map starts as an even haze and moves onto its thing."""
    s, run = small_run
    before = mm.named_mass(build(s.config("cross"), s.seed))
    after = mm.named_mass(run.model)
    assert abs(before.colour[-1] - before.chance) < 0.02  # untrained: spread evenly
    assert before.chance == pytest.approx(4 / 36)  # a thing covers 2 x 2 of the 6 x 6 patches
    assert after.colour[-1] > 2 * after.chance


def test_a_word_view_is_the_map_of_the_query_before_the_word(small_run):
    _, run = small_run
    images, _, truth = example(1)
    image = (images[0].permute(1, 2, 0) * 255).round().byte().numpy()
    view = mm.word_view(run.model, image, 1, "1", mm.LAYER_LAST)
    ids = torch.tensor([[scenes.BOS] + scenes.encode(view.words)])
    trace = run.model((mm.image_tensor(image)[None], ids), capture=["dec.1.cross.pattern"]).trace
    want = trace["dec.1.cross.pattern"][0, 1, 1]  # head 1; word 1 is written by query 1, which reads word 0
    assert np.allclose(view.grid.reshape(-1), want.numpy(), atol=1e-6)
    assert scenes.caption(truth[0])[1] in scenes.COLOURS  # word 1 of every caption is the first colour
