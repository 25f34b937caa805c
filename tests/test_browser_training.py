"""The Training page in real Chromium: texts uploaded through the file chooser (good, bad, with markup in
the name), a model trained live, stopped and written with, two students on one server (a shared run, and
uploads kept apart), and a copied link that reopens the view."""
import random
import re

from playwright.sync_api import expect

from scripts.appserver import DRAWN, offline_context, steps_seen, wait_for_charts, wait_until_idle

TINY = "tr_layers=1&tr_heads=2&tr_width=32&tr_context=16&tr_batch=16&tr_lr=0.01&tr_seed=3"
OWN = "tr_source=Your+own+text"
HOSTILE = "<img src=x onerror=alert(1)>"


def text_of(letters: str, n: int = 4000, seed: int = 0) -> str:
    """About ``n`` characters of made-up words of ``letters``, in lines: a text of one's own."""
    rng = random.Random(seed)
    lines, size = [], 0
    while size < n:
        line = " ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 7))) for _ in range(rng.randint(5, 9)))
        lines.append(line.capitalize() + ".")
        size += len(lines[-1]) + 1
    return "\n".join(lines) + "\n"


def upload(page, path) -> None:
    """Choose ``path`` in the page's file chooser, as a student does."""
    with page.expect_file_chooser() as chooser:
        page.get_by_test_id("stFileUploaderDropzone").locator(  # "Browse files", or "+" once a file is there
            "[data-testid='stBaseButton-secondary'], button[aria-label='Add files']").click()
    chooser.value.set_files(str(path))
    page.wait_for_timeout(500)
    wait_until_idle(page)


def body(page) -> str:
    return page.evaluate("document.body.innerText")


def train_to_the_end(page, steps: int = 100) -> None:
    page.get_by_role("button", name="▶ Train").click()
    page.get_by_text(f"Trained {steps} of {steps} steps.").wait_for(timeout=120_000)
    wait_until_idle(page)
    page.get_by_text("What came out").wait_for()


def samples(page) -> list[str]:
    """The texts the page shows in its boxes (ui.text_box), as written."""
    from apptest_helpers import as_written

    return [as_written(t) for t in page.locator("[data-testid='stText']").all_inner_texts()]


def clean(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0
    assert not page.errors and not page.dialogs


def test_an_uploaded_text_is_learned_and_bad_files_leave_it_and_its_model(page, server, tmp_path):
    good = tmp_path / "ferns.txt"
    good.write_text(text_of("fernskitlo"), encoding="utf-8")
    page.goto(server + f"/training?{OWN}&{TINY}&tr_steps=100")
    wait_until_idle(page)
    assert page.get_by_text("No text of yours yet").count() == 1  # Emma meanwhile
    upload(page, good)
    own = good.read_text(encoding="utf-8")
    assert f"ferns.txt: {len(own):,} characters, {len(set(own))} distinct" in body(page), body(page)[:800]
    assert page.get_by_text("No text of yours yet").count() == 0
    train_to_the_end(page)
    written = samples(page)
    assert written and all(set(s) <= set("fernskitloFERNSKITLO .\n") for s in written), written  # its characters only

    bad = {"binary.txt": (bytes(range(256)) * 20, "holds NUL bytes"),  # each file, and why it is refused
           "latin1.txt": (("café " * 600).encode("latin-1"), "is not UTF-8 text"), "empty.txt": (b"", "is empty")}
    for name, (data, why) in bad.items():
        (tmp_path / name).write_bytes(data)
        upload(page, tmp_path / name)
        alert = page.get_by_test_id("stAlert").filter(has_text="That file was not taken").inner_text()
        assert f"{name} {why}" in alert, alert
        assert "The text before it (ferns.txt) and any model trained on it are kept" in alert, alert
        assert f"ferns.txt: {len(own):,} characters" in body(page)  # the good text stays...
        assert page.get_by_text("Trained 100 of 100 steps.").count() == 1  # ...and so does its model
        assert samples(page) == written
        wait_for_charts(page, 4)

    markup = tmp_path / f"{HOSTILE}.txt"
    markup.write_text(text_of("fernskitlo", seed=1), encoding="utf-8")
    upload(page, markup)
    assert f"{HOSTILE}.txt: " in body(page)  # the name, as text
    assert page.locator("img[src=x]").count() == 0
    assert page.get_by_text("That file was not taken").count() == 0
    clean(page)


def test_training_runs_live_stop_keeps_the_model_and_it_writes(page, server):
    page.goto(server + f"/training?{TINY}&tr_steps=5000")
    wait_until_idle(page)
    page.get_by_role("button", name="▶ Train").click()
    seen = steps_seen(page, r"step (\d+) of 5000", charts=2)
    assert len(seen) >= 3, seen  # the status (and its charts) redrawn while it trains
    page.get_by_role("button", name="■ Stop").click()
    page.get_by_text("What came out").wait_for(timeout=60_000)
    wait_until_idle(page)
    kept = int(re.search(r"Trained (\d+) of 5000 steps", body(page)).group(1))
    assert max(seen) <= kept < 5000
    page.wait_for_timeout(1000)
    assert f"Trained {kept} of 5000 steps" in body(page)  # it really stopped, and the model stayed

    box = page.get_by_label("Prompt", exact=True)
    box.fill("Emma was")
    box.press("Enter")
    wait_until_idle(page)
    assert any(s.startswith("Emma was") for s in samples(page)), samples(page)
    assert re.search(r"The prompt, then \d+ characters written by the model after training", body(page))

    for typed in ("Emma 漢字", HOSTILE):  # characters Emma never uses: said, and what was typed stays
        box.fill(typed)
        box.press("Enter")
        wait_until_idle(page)
        warning = page.get_by_test_id("stAlert").filter(has_text="Nothing written").inner_text()
        assert "never uses" in warning, warning
        expect(box).to_have_value(typed)
    assert "'<'" in warning and "'>'" in warning  # the markup named as characters
    assert page.locator("img[src=x]").count() == 0
    assert f"Trained {kept} of 5000 steps" in body(page)
    clean(page)


def pick(page, label: str, option: str) -> None:
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True)).first
    box.evaluate("e => e.scrollIntoView({block: 'center'})")
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_until_idle(page)


def test_a_copied_link_reopens_the_view_two_students_share_a_run_but_not_their_texts(browser, page, server,
                                                                                      tmp_path):
    """One second student for three checks: an untrained view's link reopens it; a trained view's link
    gets the very run the first student trained (shared, not retrained); each student's upload stays theirs."""
    page.goto(server + f"/training?{TINY}&tr_steps=100")
    wait_until_idle(page)
    pick(page, "Attention", "linear")
    pick(page, "Positional encoding", "rope")
    box = page.get_by_label("Prompt", exact=True)
    box.fill("Harriet")
    box.press("Enter")
    wait_until_idle(page)
    pick(page, "Head", "1")
    link = page.url
    assert all(p in link for p in ("tr_attention=linear", "tr_encoding=rope", "tr_prompt=Harriet", "tr_head=1"))
    shown = [s for s in samples(page) if s.startswith("Harriet")]
    assert shown

    other = offline_context(browser, viewport={"width": 1400, "height": 1600})  # a second student
    p2 = other.new_page()
    errors = []
    p2.on("pageerror", lambda e: errors.append(str(e)))
    p2.goto(link)  # a copied link (untrained) reopens the view
    wait_until_idle(p2)
    wait_for_charts(p2, 4)
    expect(p2.get_by_label("Prompt", exact=True)).to_have_value("Harriet")
    expect(p2.get_by_role("combobox", name="Attention", exact=True)).to_have_value("linear")
    expect(p2.get_by_role("combobox", name="Positional encoding", exact=True)).to_have_value("rope")
    expect(p2.get_by_role("combobox", name="Head", exact=True)).to_have_value("1")
    assert "layer 0, head 1" in " ".join(p2.locator("[data-testid='stPlotlyChart'] text.gtitle").all_text_contents())
    assert [s for s in samples(p2) if s.startswith("Harriet")] == shown  # the same untrained model, seed and draw
    assert p2.locator("[data-testid='stException']").count() == 0

    train_to_the_end(page)  # the first student trains; the second opens the trained view's link
    link = page.url
    assert "tr_trained=1" in link
    first = (body(page)[body(page).index("What came out"):].split("Write with the model")[0], page.evaluate(DRAWN))
    p2.goto(link)
    wait_until_idle(p2)
    p2.get_by_text("What came out").wait_for()
    wait_for_charts(p2, first[1])
    text = body(p2)
    # the same run (its training seconds included), not a second one trained alike
    assert (text[text.index("What came out"):].split("Write with the model")[0], p2.evaluate(DRAWN)) == first
    assert samples(p2) == samples(page)

    alpha, beta = tmp_path / "alpha.txt", tmp_path / "beta.txt"
    alpha.write_text(text_of("abcdeg"), encoding="utf-8")
    beta.write_text(text_of("mnpqrsu", seed=2), encoding="utf-8")
    page.goto(server + f"/training?{OWN}&{TINY}")
    wait_until_idle(page)
    upload(page, alpha)
    assert "alpha.txt: " in body(page)
    p2.goto(server + f"/training?{OWN}&{TINY}")
    wait_until_idle(p2)
    assert p2.get_by_text("No text of yours yet").count() == 1 and "alpha.txt" not in body(p2)
    upload(p2, beta)
    text = body(p2)
    assert "beta.txt: " in text and "alpha.txt" not in text
    assert all(set(s) <= set("mnpqrsuMNPQRSU .\n") for s in samples(p2)), samples(p2)  # written from beta's characters
    assert "alpha.txt: " in body(page)  # and the first student still has theirs
    assert not errors and p2.locator("[data-testid='stException']").count() == 0
    other.close()
    clean(page)
