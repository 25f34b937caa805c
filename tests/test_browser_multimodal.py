"""The Multimodal page in real Chromium: uploads (good and bad) and the maps redrawn while training."""
import io

from PIL import Image

from scripts.appserver import DRAWN, steps_seen, wait_until_idle


def png_bytes() -> bytes:
    img = Image.new("RGB", (200, 120), (20, 20, 28))
    for x in range(20, 80):
        for y in range(30, 90):
            img.putpixel((x, y), (230, 60, 50))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def upload(page, name: str, data: bytes, mime: str) -> None:
    page.locator("[data-testid='stFileUploaderDropzoneInput']").set_input_files(
        files=[{"name": name, "mimeType": mime, "buffer": data}])
    page.wait_for_timeout(500)
    wait_until_idle(page)


def test_uploads_are_captioned_and_bad_ones_refused_keeping_the_scene(page, server):
    page.goto(server + "/multimodal?mm_colour0=yellow&mm_source=Upload")
    wait_until_idle(page)
    page.wait_for_function(f"{DRAWN} >= 2")
    upload(page, "broken.png", png_bytes()[:300], "image/png")  # truncated
    assert page.get_by_text("Your own picture is not captioned").count() == 1
    assert page.get_by_text("The composed scene is shown instead").count() == 1
    page.wait_for_function(f"{DRAWN} >= 2")  # both maps still drawn, of the composed scene
    assert page.get_by_text("The true caption: “a yellow circle").count() == 1  # the link's scene is kept
    upload(page, "<img src=x onerror=alert(1)>.png", png_bytes(), "image/png")
    assert page.get_by_text("Your picture, at 48 × 48 pixels").count() == 1
    assert page.get_by_text("Your own picture is not captioned").count() == 0
    page.wait_for_function(f"{DRAWN} >= 2")
    assert page.get_by_text("The true caption").count() == 0  # an upload has no true caption
    assert page.locator("[data-testid='stException']").count() == 0
    assert not page.errors and not page.dialogs  # the file's name never ran as markup


def test_the_maps_follow_the_model_while_it_trains(page, server):
    # both modes (the default): a CI run once lost a non-default multiselect value (mm_fusions=cross) from the
    # URL and the widget at the Stop click, which showed the other settings' untrained view (see the closing note)
    page.goto(server + "/multimodal?mm_steps=3000&mm_until_learned=false&mm_seed=11&mm_word=1")
    wait_until_idle(page)
    page.get_by_role("button", name="▶ Train").click()
    seen = steps_seen(page, r"late fusion\) \(step (\d+)\)")
    assert len(seen) >= 3, seen  # the caption (and its map) redrawn at three steps while training
    assert page.evaluate(DRAWN) >= 2
    page.get_by_role("button", name="■ Stop").click()
    try:
        page.get_by_text("Trained.").wait_for(timeout=60_000)
    except Exception as e:  # say what the page showed instead
        raise AssertionError(f"no 'Trained.' after Stop at {page.url}: {page.evaluate('document.body.innerText')[:1500]}") from e
    assert page.locator("[data-testid='stException']").count() == 0
    assert not page.errors


def test_a_drawing_is_captioned_and_the_scene_comes_back_on_its_tab(page, server):
    page.goto(server + "/multimodal?mm_source=Draw&mm_colour0=green")
    wait_until_idle(page)
    assert page.get_by_text("Nothing drawn yet").count() == 1
    canvas = page.locator("canvas").first
    canvas.wait_for()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + 30, box["y"] + 30)
    page.mouse.down()
    for i in range(12):
        page.mouse.move(box["x"] + 30 + 4 * i, box["y"] + 40)
    page.mouse.up()
    page.get_by_role("button", name="Caption this drawing").click()
    page.get_by_text("Your drawing, at 48 × 48 pixels").wait_for(timeout=30_000)
    wait_until_idle(page)
    page.wait_for_function(f"{DRAWN} >= 2")
    # the stroke reached the server: the captioned picture (the first map's image) is red where it was painted
    drawn = page.evaluate("document.querySelector('.js-plotly-plot').data[0].z[10][10]")
    assert drawn[0] > 150 and drawn[1] < 120, drawn
    assert page.get_by_text("The true caption").count() == 0
    page.get_by_role("tab", name="Compose").click()  # back to the composed scene, which was kept
    page.get_by_text("The true caption: “a green circle").wait_for(timeout=30_000)
    assert page.locator("[data-testid='stException']").count() == 0
    assert not page.errors
