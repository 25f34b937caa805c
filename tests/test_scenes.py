"""The captioning world: captions true of their scenes, splits, rendering, and refused uploads."""
import io
import itertools
import random

import numpy as np
import pytest
import torch
from PIL import Image

from explorer import scenes as S
from explorer.scenes import Thing, make_scene


def sampled(n_per_split=200):
    return [(split, s) for split in S.SPLITS for s in S.batch_scenes(split, n_per_split, seed=7)]


# ---------------------------------------------------------------------------------------- captions
def test_captions_are_true_parse_back_fit_and_round_trip():
    for split, scene in sampled():
        words = S.caption(scene)
        assert S.is_true(words, scene), (split, scene)
        things, relations = S.parse(words)
        assert things == [(t.colour, t.shape) for t in scene.things]
        assert len(relations) == len(scene.things) - 1
        assert len(words) <= S.MAX_CAPTION
        ids = S.encode(words)
        assert S.decode(ids) == words
        assert S.decode([S.BOS, *ids, S.EOS, S.PAD, S.PAD]) == words


def test_a_caption_with_one_word_changed_is_false():
    scene = make_scene([Thing("circle", "red", 0, 0), Thing("square", "blue", 2, 1),
                        Thing("triangle", "green", 0, 2)])
    words = S.caption(scene)
    assert words == "a red circle left of a blue square left of a green triangle".split()
    swapped = ["yellow" if w == "red" else w for w in words]
    assert not S.is_true(swapped, scene)
    assert not S.is_true(words[:3] + ["above"] + words[5:], scene)  # "left of" -> "above"
    column = make_scene([Thing("circle", "red", 0, 1), Thing("square", "blue", 1, 1)])
    assert S.is_true(S.caption(column), column)
    assert not S.is_true("a red circle left of a blue square".split(), column)  # "above" -> "left of"
    assert not S.is_true("a blue square above a red circle".split(), column)  # order reversed
    assert not S.is_true(words[:-3], scene)  # a thing left out
    for split, s in sampled(30):  # changing any colour word makes every sampled caption false
        w = S.caption(s)
        i = w.index(s.things[0].colour)
        w[i] = next(c for c in S.COLOURS if c != w[i])
        assert not S.is_true(w, s)


def test_exact_captions_and_canonical_order():
    one = make_scene([Thing("circle", "red", 1, 1)])
    assert S.caption(one) == ["a", "red", "circle"]
    two = [Thing("square", "blue", 0, 2), Thing("circle", "red", 2, 0)]
    assert " ".join(S.caption(make_scene(two))) == "a red circle left of a blue square"
    three = [Thing("triangle", "green", 2, 2), Thing("square", "blue", 0, 2), Thing("circle", "red", 1, 0)]
    expected = "a red circle left of a blue square above a green triangle"
    for order in itertools.permutations(three):  # input order does not matter
        scene = make_scene(order)
        assert scene.things == (three[2], three[1], three[0])
        assert " ".join(S.caption(scene)) == expected
    column = make_scene([Thing("circle", "yellow", 2, 0), Thing("square", "yellow", 0, 0)])
    assert " ".join(S.caption(column)) == "a yellow square above a yellow circle"


def test_parse_rejects_what_is_not_in_the_grammar():
    assert S.parse("a red circle above a blue square".split()) == ([("red", "circle"), ("blue", "square")],
                                                                    ["above"])
    bad = ["", "a red", "red circle", "a circle red", "a red circle left a blue square",
           "a red circle of left a blue square", "a red circle above", "a purple circle",
           "a red circle above a blue square above a red square above a red triangle"]
    for text in bad:
        assert S.parse(text.split()) is None, text
    with pytest.raises(ValueError, match="'purple'"):
        S.encode(["a", "purple", "circle"])


def test_invalid_scenes_are_named():
    assert make_scene([Thing("circle", "red", 0, 0)]).problem() is None
    cases = {
        "shape": [Thing("star", "red", 0, 0)],
        "colour": [Thing("circle", "pink", 0, 0)],
        "outside": [Thing("circle", "red", 3, 0)],
        "same cell": [Thing("circle", "red", 1, 1), Thing("square", "blue", 1, 1)],
        "1 to 3": [Thing("circle", "red", 0, c) for c in range(3)] + [Thing("circle", "red", 1, 0)],
    }
    for words, things in cases.items():
        problem = make_scene(things).problem()
        assert problem and words in problem, (words, problem)
    assert "1 to 3" in S.Scene(()).problem()
    assert "canonical" in S.Scene((Thing("circle", "red", 0, 1), Thing("circle", "red", 0, 0))).problem()
    with pytest.raises(ValueError):
        S.caption(S.Scene(()))


# ------------------------------------------------------------------------------------------ splits
def test_splits_hold_out_the_combinations():
    for split, scene in sampled(300):
        held = [(t.colour, t.shape) in S.HELD_OUT for t in scene.things]
        assert any(held) == (split == "hard"), (split, scene)
        assert S.in_split(scene, split) and scene.problem() is None
    sizes = {len(s.things) for _, s in sampled(100)}
    assert sizes == {1, 2, 3}


def test_batches_are_deterministic_and_seeded():
    assert S.batch_scenes("train", 50, 3) == S.batch_scenes("train", 50, 3)
    assert S.batch_scenes("train", 50, 3) != S.batch_scenes("train", 50, 4)
    assert S.batch_scenes("train", 50, 3) != S.batch_scenes("held_out", 50, 3)
    images, captions, scenes = S.batch("hard", 16, 5)
    again = S.batch("hard", 16, 5)
    assert torch.equal(images, again[0]) and torch.equal(captions, again[1]) and scenes == again[2]
    assert scenes == S.batch_scenes("hard", 16, 5)
    assert not torch.equal(images, S.batch("hard", 16, 6)[0])
    assert images.shape == (16, 3, S.SIZE, S.SIZE) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1
    assert captions.shape == (16, S.CAPTION_TOKENS) and captions.dtype == torch.long
    for row, scene in zip(captions, scenes):
        n = len(S.caption(scene))
        assert row[0] == S.BOS and row[n + 1] == S.EOS and (row[n + 2:] == S.PAD).all()
        assert S.decode(row.tolist()) == S.caption(scene)


def test_count_scenes_matches_brute_force():
    things = [Thing(s, c, r, k) for s in S.SHAPES for c in S.COLOURS for r in range(S.GRID)
              for k in range(S.GRID)]
    counts = dict.fromkeys(S.SPLITS, 0)
    for k in range(1, S.MAX_THINGS + 1):
        for combo in itertools.combinations(things, k):
            if len({(t.row, t.col) for t in combo}) < k:
                continue
            held = any((t.colour, t.shape) in S.HELD_OUT for t in combo)
            counts["hard" if held else "train"] += 1
    counts["held_out"] = counts["train"]
    assert counts == {split: S.count_scenes(split) for split in S.SPLITS}
    assert counts == {"train": 64_233, "held_out": 64_233, "hard": 86_211}  # as the docstring says


# ------------------------------------------------------------------------------------------ render
def cell_pixels(image, row, col):
    c = S.CELL
    return image[row * c:(row + 1) * c, col * c:(col + 1) * c].reshape(-1, 3)


def test_each_thing_colours_its_own_cell_only():
    background = np.array(S.BACKGROUND)
    for seed, (_, scene) in enumerate(sampled(40)):
        image = S.render(scene, seed)
        assert image.shape == (S.SIZE, S.SIZE, 3) and image.dtype == np.uint8
        occupied = {(t.row, t.col): t for t in scene.things}
        for r, c in itertools.product(range(S.GRID), repeat=2):
            pixels = cell_pixels(image, r, c)
            ink = pixels[(pixels != background).any(1)]
            if (r, c) not in occupied:
                assert len(ink) == 0
                continue
            thing = occupied[(r, c)]
            assert len(ink) > 40
            assert np.abs(ink.mean(0) - S.COLOURS[thing.colour]).max() < 5


def test_shapes_differ_square_circle_triangle():
    counts = {}
    for shape in S.SHAPES:
        image = S.render(make_scene([Thing(shape, "blue", 1, 1)]), seed=11)
        counts[shape] = int((image != np.array(S.BACKGROUND)).any(2).sum())
    assert counts["square"] > counts["circle"] > counts["triangle"] > 0
    assert S.render(make_scene([Thing("circle", "red", 0, 0)]), 1).tobytes() == \
        S.render(make_scene([Thing("circle", "red", 0, 0)]), 1).tobytes()


def test_render_reuses_its_shape_masks():
    """Rendering a batch draws each shape's mask once (what keeps a batch quick; its speed is measured by
    the multimodal bench, not asserted here): a second pass over the same scenes computes no new mask."""
    scenes = S.batch_scenes("train", 64, 1)
    first = S.to_tensor([S.render(s, i) for i, s in enumerate(scenes)])
    misses = S._mask.cache_info().misses
    again = S.to_tensor([S.render(s, i) for i, s in enumerate(scenes)])
    assert S._mask.cache_info().misses == misses
    assert (first == again).all()


def test_patches_of_cover_the_cell():
    assert S.patches_of(Thing("circle", "red", 0, 0), 8) == [0, 1, 6, 7]
    assert S.patches_of(Thing("circle", "red", 1, 2), 8) == [16, 17, 22, 23]
    assert S.patches_of(Thing("circle", "red", 2, 1), 8) == [26, 27, 32, 33]
    assert S.patches_of(Thing("circle", "red", 2, 2), 16) == [8]
    image = S.render(make_scene([Thing("square", "red", 1, 2)]), 3)
    patches = image.reshape(6, 8, 6, 8, 3).transpose(0, 2, 1, 3, 4).reshape(36, -1)
    inked = [i for i in range(36) if (patches[i] != patches[0]).any()]
    assert set(inked) <= set(S.patches_of(Thing("square", "red", 1, 2), 8)) and inked


# ----------------------------------------------------------------------------------------- uploads
def encoded(img, fmt, **kw):
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def noise(w, h, mode="RGB", seed=0):
    channels = {"RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, channels), np.uint8), mode)


@pytest.mark.parametrize("data", [
    encoded(noise(80, 60), "PNG"),
    encoded(noise(60, 90), "JPEG"),
    encoded(noise(50, 50, "RGBA"), "PNG"),
    encoded(Image.new("L", (30, 30), 128), "PNG"),
    encoded(Image.new("P", (30, 30), 1), "PNG"),
    encoded(Image.new("I;16", (30, 30), 40000), "PNG"),
], ids=["png", "jpeg", "rgba", "grey", "palette", "16-bit"])
def test_valid_uploads_give_a_small_rgb_image(data):
    image = S.image_from_upload(data)
    assert image.shape == (S.SIZE, S.SIZE, 3) and image.dtype == np.uint8


def test_upload_is_centre_cropped_and_transparency_is_dark():
    img = Image.new("RGB", (90, 30), (0, 0, 255))
    img.paste((255, 0, 0), (30, 0, 60, 30))  # red centre square, blue sides
    image = S.image_from_upload(encoded(img, "PNG"))
    assert (image[2:-2, 2:-2] == (255, 0, 0)).all()
    clear = S.image_from_upload(encoded(Image.new("RGBA", (20, 20), (255, 255, 255, 0)), "PNG"))
    assert (clear == S.BACKGROUND).all()


def apng():
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    return encoded(frames[0], "PNG", save_all=True, append_images=frames[1:])


def test_bad_uploads_are_refused_with_a_sentence():
    png = encoded(noise(64, 64), "PNG")
    cases = {
        "empty": (b"", {}),
        "random bytes": (random.Random(0).randbytes(2000), {}),
        "text": (b"hello, this is a text file\n" * 20, {}),
        "gif": (encoded(noise(20, 20).convert("P"), "GIF"), {}),
        "animated png": (apng(), {}),
        "over size": (png, {"max_bytes": 1000}),
        "huge dimensions": (encoded(Image.new("1", (6000, 6000)), "PNG"), {}),
        "truncated": (png[:len(png) // 2], {}),
    }
    messages = {}
    for name, (data, kw) in cases.items():
        with pytest.raises(S.UploadRefused) as refused:
            S.image_from_upload(data, **kw)
        message = str(refused.value)
        assert message[0].isupper() and message.endswith(".") and message.count(". ") == 0, message
        messages[name] = message
    assert "GIF" in messages["gif"] and "nimated" in messages["animated png"]
    assert "6000x6000" in messages["huge dimensions"] and "truncated" in messages["truncated"]
    assert len(cases["huge dimensions"][0]) < 100_000  # refused by pixel count, not by bytes
    assert isinstance(S.UploadRefused("x"), ValueError)


def test_size_message_names_both_sizes():
    with pytest.raises(S.UploadRefused, match=r"is 7\.2 MB; the limit is 5 MB\."):
        S.image_from_upload(b"\x89PNG" + bytes(7_200_000 - 4))
