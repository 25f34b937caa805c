"""The shelf: lessons' seeded runs shipped with the app (explorer/data/shelf), read without unpickling,
found only under the key the code gives today, equal to training them again."""
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from explorer import lab
from explorer.jobs import DONE, FunctionJob, Job, Scheduler, run_to_end
from explorer.lessons import LESSONS
from explorer.runs import TrainedRun
from explorer.shelf import ROUNDING, NotShippable, Shelf, decode, encode, key_text, same_tree, untimed

ROOT = Path(__file__).resolve().parents[1]
REVERSE = lab.LabSettings("reverse", 12, "softmax", 8, 4, "learned", 2, 64, 300, 0, True)  # the reverse lesson's


def tiny_run() -> TrainedRun:
    return run_to_end(lab.training_job(lab.LabSettings("copy", 4, "softmax", 8, 2, "learned", 1, 32, 20, 3, False)))


def test_key_text_is_the_same_in_every_process():
    key = ("lab", REVERSE, frozenset({"b", "a", "c"}), {"y": 1.5, "x": float("nan")})
    code = ("from explorer import lab; from explorer.shelf import key_text; "
            "print(key_text(('lab', lab.LabSettings('reverse', 12, 'softmax', 8, 4, 'learned', 2, 64, 300, 0, True), "
            "frozenset({'b', 'a', 'c'}), {'y': 1.5, 'x': float('nan')})))")
    texts = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={"PYTHONHASHSEED": str(seed), "PATH": ""}, cwd=ROOT).stdout.strip() for seed in (1, 2)}
    assert texts == {key_text(key)}
    with pytest.raises(NotShippable, match="function"):
        key_text(("lab", lambda: 0))  # its text would hold an address


def test_a_run_survives_the_round_trip_and_is_read_without_pickle(tmp_path):
    run = tiny_run()
    shelf = Shelf(tmp_path)
    shelf.put(("tiny",), run, "tiny", "a tiny run")
    back = Shelf(tmp_path).get(("tiny",))
    assert isinstance(back, TrainedRun) and type(back.model) is type(run.model)
    assert same_tree(encode(back), encode(run))
    assert back.history == run.history and back.step == run.step and back.learned_at == run.learned_at
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(back.model(ids).logits, run.model(ids).logits)
    assert not any(p.requires_grad for p in back.model.parameters()) and not back.model.training
    # the file is plain containers and tensors: the safe loader reads it
    assert torch.load(tmp_path / shelf.entry(("tiny",))["file"], weights_only=True)


def test_the_shelf_refuses_what_it_cannot_write_or_should_not_build(tmp_path):
    with pytest.raises(NotShippable, match="function"):
        encode({"f": print})
    with pytest.raises(NotShippable, match="not a class of the explorer library"):
        decode({"__dataclass__": "os:system", "fields": {}})
    with pytest.raises(NotShippable, match="not a module"):
        decode({"__module__": "explorer.lab:LabSettings", "config": None, "state": {}})
    # a damaged file, a key the shelf lacks, a file made by another torch: not found (the server trains instead)
    shelf = Shelf(tmp_path)
    shelf.put(("tiny",), {"a": 1}, "tiny", "t")
    (tmp_path / shelf.entry(("tiny",))["file"]).write_bytes(b"not a file")
    assert Shelf(tmp_path).get(("tiny",)) is None and Shelf(tmp_path).get(("other",)) is None
    shelf.put(("tiny",), {"a": 1}, "tiny", "t")
    assert Shelf(tmp_path).get(("tiny",)) == {"a": 1}
    index = shelf.index()
    for entry in index.values():
        entry["torch"] = "0.0"
    assert shelf.get(("tiny",)) is None


class Counting(FunctionJob):
    shippable = True


def test_the_scheduler_takes_a_shippable_job_from_the_shelf_without_running_it(tmp_path):
    shelf = Shelf(tmp_path)
    shelf.put(("made",), {"answer": 42}, "x", "t")
    shelf.put(("measured",), "from another machine", "x", "t")
    calls = []
    s = Scheduler(memory_budget_bytes=1e9, workers=1, shelf=shelf)
    try:
        h = s.submit(Counting(lambda: calls.append(1) or {"answer": 0}, key=("made",)))
        assert h.status == DONE and h.shipped and h.result() == {"answer": 42} and h.job.live() is None
        assert s.submit(Counting(lambda: calls.append(1), key=("made",))) is h  # shared like any result
        plain = s.submit(FunctionJob(lambda: calls.append(1) or {"answer": 0}, key=("made",) * 2))
        other = s.submit(Counting(lambda: calls.append(1) or {"answer": 1}, key=("not made",)))
        assert plain.wait(10) == DONE and other.wait(10) == DONE
        assert not plain.shipped and not other.shipped and other.result() == {"answer": 1} and len(calls) == 2
        # a job that is not shippable is never looked up, even under a key the shelf has
        unshippable = s.submit(FunctionJob(lambda: "measured here", key=("measured",)))
        assert unshippable.wait(10) == DONE and unshippable.result() == "measured here"
    finally:
        s.shutdown()


def test_every_job_kind_restores_what_its_pages_read():
    job = lab.training_job(REVERSE)
    run = tiny_run()
    job.restore(run)
    assert job.live() is run and job.result() is run
    base = Job()
    base.restore("r")
    assert base.live() == "r"


def test_the_shipped_reverse_run_is_what_training_it_again_gives():
    """Shipped runs equal the code's: the reverse lesson's run trained again here, the same but for
    its wall times and another CPU's rounding (``ROUNDING``; bit for bit on the machine that made
    the shelf). ``python scripts/shelf.py --check`` does this for every lesson."""
    job = lab.training_job(REVERSE)
    shipped = Shelf().get(job.key)
    assert shipped is not None, "the reverse lesson's run is not on the shelf: run python scripts/shelf.py reverse"
    torch.set_num_threads(1)
    again = run_to_end(job)
    assert shipped.learned_at == again.learned_at and [h[0] for h in shipped.history] == [h[0] for h in again.history]
    assert same_tree(untimed(encode(shipped)), untimed(encode(again)), **ROUNDING)
    changed = lab.training_job(dataclasses.replace(REVERSE, seed=1))  # the same code, another seed: told apart
    assert not same_tree(untimed(encode(shipped)), untimed(encode(run_to_end(changed))), **ROUNDING)


def test_rounding_tolerates_the_last_digits_only():
    a = {"loss": [3.306002, 1.25], "w": torch.tensor([0.5, -1.0])}
    assert same_tree(a, {"loss": [3.306003, 1.25], "w": torch.tensor([0.5004, -1.0])}, **ROUNDING)
    assert not same_tree(a, {"loss": [3.306003, 1.25], "w": torch.tensor([0.5004, -1.0])})  # bit for bit
    assert not same_tree(a, {"loss": [3.4, 1.25], "w": torch.tensor([0.5, -1.0])}, **ROUNDING)
    assert not same_tree(a, {"loss": [3.306002, 1.25], "w": torch.tensor([0.52, -1.0])}, **ROUNDING)


def test_every_lesson_that_trains_is_on_the_shelf():
    made = Shelf().lessons()
    trains = {name for name in LESSONS.names() if LESSONS[name].autorun} - {"quadratic"}  # a measurement of this machine
    assert trains <= made, f"not on the shelf: {sorted(trains - made)}; run python scripts/shelf.py"


def test_a_run_whose_page_never_rewinds_keeps_no_checkpoints():
    """What the shelf ships is what the server keeps: the Lab's runs keep checkpoints to rewind to;
    runs of pages that never rewind keep their last weights only."""
    from explorer import incontext

    settings = incontext.InductionSettings(steps=10)
    run = run_to_end(incontext.training_job(settings))
    assert run.checkpoints == [] and run.step == 10
    at3, last = run.model_at(3).state_dict(), run.model.state_dict()
    assert all(torch.equal(at3[k], last[k]) for k in last)
    assert [c[0] for c in tiny_run().checkpoints] == [0, 20]  # the Lab's: the first and the last at least
