"""The Memory and In-context learning pages in real Chromium: turns typed into the conversation
(good, bad and hostile), and an induction model trained live, stopped and ablated."""
import re

from scripts.appserver import DRAWN, steps_seen, wait_until_idle


def add_turn(page, text: str) -> None:
    box = page.get_by_role("textbox", name="Next turn")
    box.fill(text)
    box.press("Enter")
    wait_until_idle(page)
    page.get_by_role("button", name="Add turn").click()
    page.wait_for_timeout(300)
    wait_until_idle(page)


def test_typed_turns_join_the_conversation_and_bad_ones_stay_in_the_box(page, server):
    page.goto(server + "/memory")
    wait_until_idle(page)
    page.wait_for_function(f"{DRAWN} >= 3")
    add_turn(page, "<img src=x onerror=alert(1)>")  # markup is just characters here
    turns = page.locator(".mem-turns").inner_text()
    assert "<img" in turns and page.locator(".mem-turns img").count() == 0
    add_turn(page, "Ça va?")
    assert page.get_by_text("That turn was not added").count() == 1
    assert page.get_by_role("textbox", name="Next turn").input_value() == "Ça va?"  # nothing typed is lost
    assert "mem_turn=" in page.url and "onerror" in page.url.replace("%3D", "=")  # the link carries the turns
    page.wait_for_function(f"{DRAWN} >= 3")
    assert page.locator("[data-testid='stException']").count() == 0
    assert not page.errors and not page.dialogs


def test_an_induction_model_trains_live_stops_and_is_ablated(page, server):
    page.goto(server + "/incontext?icl_steps=4000&icl_seed=5")
    wait_until_idle(page)
    page.get_by_role("button", name="▶ Train").click()
    steps = steps_seen(page, r"step (\d+) of 4000", charts=3)
    assert len(steps) >= 3, steps  # the curves redrawn while it trains
    page.get_by_role("button", name="■ Stop").click()
    page.get_by_text("What came out").wait_for(timeout=60_000)
    wait_until_idle(page)
    assert re.search(r"Trained \d+ of 4000 steps", page.evaluate("document.body.innerText"))
    page.wait_for_function(f"{DRAWN} >= 5")  # curves, scores and both maps of the stopped model
    page.get_by_role("combobox", name="Ablate a head (zero its output)").click()
    page.get_by_role("option", name="L0 H1").click()
    page.get_by_text("With L0 H1 ablated (its output zeroed)").wait_for(timeout=30_000)
    wait_until_idle(page)
    assert "icl_ablate=L0" in page.evaluate("window.location.href"), page.evaluate("window.location.href")
    assert page.locator("[data-testid='stException']").count() == 0
    assert not page.errors
