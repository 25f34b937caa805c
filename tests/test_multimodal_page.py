"""The Multimodal page through AppTest: the composer, links, bad input, training, stopping and scores."""
from streamlit.testing.v1 import AppTest

from apptest_helpers import APP, assert_clean, multimodal_busy, open_page, plotly_specs, run_until, shown_table, texts
from explorer import multimodal as mm
from explorer import scenes

PAGE = "pages/multimodal.py"


def opened_with(params: dict) -> AppTest:
    """The page opened from a link with these parameters."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(PAGE)  # the first run is this page's, with the link's parameters
    at.query_params.update(params)
    at.run()
    assert_clean(at)
    return at


def map_titles(at) -> list[str]:
    return [sp["layout"]["title"]["text"] for sp in plotly_specs(at) if sp["data"][0]["type"] == "image"]


def test_first_open_shows_the_default_scene_read_by_untrained_models():
    at = open_page(PAGE, timeout=60)
    assert len(map_titles(at)) == 2  # one map per fusion mode
    said = [m.value for m in at.markdown if "(untrained)" in m.value]
    assert len(said) == 2
    truth = " ".join(scenes.caption(mm.DEFAULT_SCENE))
    assert any(truth in c for c in texts(at.caption))
    assert any("Press **Train**" in i.value for i in at.info)


def test_a_link_composes_the_scene_and_picks_the_word():
    at = opened_with({"mm_things": "3", "mm_shape2": "circle", "mm_colour2": "green", "mm_cell2": "middle centre",
                      "mm_word": "1", "mm_head": "2"})
    assert at.session_state["mm_shape2"] == "circle" and at.session_state["mm_things"] == 3
    words = scenes.caption(mm.scene_from_controls(
        [(at.session_state[f"mm_shape{i}"], at.session_state[f"mm_colour{i}"], at.session_state[f"mm_cell{i}"])
         for i in range(3)], 3)[0])
    assert "green circle" in " ".join(words)
    assert any(f"The true caption: “{' '.join(words)}”" in c for c in texts(at.caption))
    assert all("head 2" in t for t in map_titles(at))


def test_bad_link_values_and_impossible_scenes_get_messages_not_tracebacks():
    at = opened_with({"mm_patch": "7", "mm_colour0": "<b>purple</b>", "mm_cell1": "top left"})
    warnings = " ".join(texts(at.warning))
    assert "ignored" in warnings and "mm_patch" in warnings
    assert "two things are in the top left cell" in warnings  # both things in one cell
    assert at.session_state["mm_patch"] == 8 and at.session_state["mm_colour0"] == "red"
    at.selectbox(key="mm_cell1").set_value("bottom right").run()  # move one: the scene is back
    assert_clean(at)
    assert len(map_titles(at)) == 2
    at.multiselect(key="mm_fusions").set_value([]).run()
    assert any("choose at least one fusion mode" in e for e in texts(at.error))
    assert at.button(key="mm_train").disabled


def test_random_scene_sets_the_composer():
    at = open_page(PAGE, timeout=60)
    at.button(key="mm_random").click().run()
    rows = mm.random_rows(1)
    assert at.session_state["mm_things"] == len(rows)
    assert [at.session_state[f"mm_shape{i}"] for i in range(len(rows))] == [r[0] for r in rows]
    assert_clean(at)


def test_training_then_scores_findings_and_a_link_flag():
    at = opened_with({"mm_steps": "100", "mm_until_learned": "false"})
    at.button(key="mm_train").click().run()
    run_until(at, multimodal_busy, timeout_s=240)
    assert_clean(at)
    assert not any("(untrained)" in m.value for m in at.markdown)
    table = shown_table(at, "mm_scores")
    assert list(table["steps"]) == [100, 100]
    assert list(table["attention weights per head"]) == [f"{mm.attention_scores(mm.MultimodalSettings().config(f)):,}"
                                                         for f in ("cross", "early")]
    assert any("What came out" in m.value and "held-out scenes captioned" in m.value for m in at.markdown)
    assert at.query_params["mm_trained"] == "1"
    loss = [sp for sp in plotly_specs(at) if sp["layout"]["title"]["text"] == "training loss"]
    assert len(loss) == 1 and len(loss[0]["data"]) == 2


def test_stop_keeps_the_models_as_they_are():
    at = opened_with({"mm_steps": "5000", "mm_fusions": "cross", "mm_until_learned": "false", "mm_seed": "7"})
    at.button(key="mm_train").click().run()
    run_until(at, lambda a: a.session_state["mm_handles"]["cross"].job.live() is None
              or a.session_state["mm_handles"]["cross"].job.live().step < 20, timeout_s=120)
    at.button(key="mm_stop").click().run()
    kept = at.session_state["mm_stopped"]["cross"][1]
    assert 20 <= kept.step < 5000
    at.run()
    assert any(f"step {kept.step} of 5000" in m.value for m in at.markdown)
    assert not any("(untrained)" in m.value for m in at.markdown)
    assert_clean(at)


def test_the_picture_comes_from_the_open_tab_and_a_refusal_keeps_the_scene():
    scene = mm.DEFAULT_SCENE
    composed = mm.picture("Compose", scene, None)
    assert composed.truth == scenes.caption(scene) and not composed.error
    waiting = mm.picture("Draw", scene, None, drawing=None)
    assert waiting.truth == composed.truth and "Nothing drawn yet" in waiting.note
    bad = mm.picture("Upload", scene, None, upload=b"GIF89a" + bytes(40))
    assert bad.error and bad.truth == composed.truth  # refused: the composed scene is kept
    assert "PNG" in mm.picture("Draw", scene, None, drawing="data:text/html;base64,PHNjcmlwdD4=").error
    assert "damaged" in mm.picture("Draw", scene, None, drawing="data:image/png;base64,@@@").error
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (48, 48), (230, 60, 50)).save(buf, "PNG")
    drawn = mm.picture("Draw", scene, None, drawing="data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
    assert drawn.truth is None and drawn.image.shape == (48, 48, 3) and "Your drawing" in drawn.note
    assert tuple(drawn.image[10, 10]) == (230, 60, 50)


def test_a_scoring_job_that_fails_is_said_and_the_page_stands(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the scorer broke")

    monkeypatch.setattr(mm, "evaluate_captions", broken)
    at = opened_with({"mm_steps": "100", "mm_seed": "31", "mm_until_learned": "false"})
    at.button(key="mm_train").click().run()
    run_until(at, multimodal_busy, timeout_s=240)
    assert any("could not be scored" in e and "the scorer broke" in e for e in texts(at.error))
    assert_clean(at)
    assert len(map_titles(at)) == 2  # the trained models' maps are still drawn


def test_another_untrained_model_draws_its_own_map():
    """The session's cache of drawn views is keyed by the model shown, not only by its step: other
    initial weights (fixed 2-D sines instead of a learned table) give the early model another map."""
    def early_map(at):  # early fusion's last layer is 2, cross-attention's is 1
        return next(sp["data"][1]["z"] for sp in plotly_specs(at)
                    if sp["data"][0]["type"] == "image" and "layer 2" in sp["layout"]["title"]["text"])

    at = open_page(PAGE, timeout=60)
    before = early_map(at)
    at.selectbox(key="mm_pos2d").set_value("sinusoidal").run()
    assert early_map(at) != before
    assert_clean(at)
