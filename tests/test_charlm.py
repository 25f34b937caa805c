"""The char-level recipes: nanoGPT's CPU recipe as published, the app default learns, the bench writes its curves."""
import dataclasses
import json
import math

import torch

from explorer import bench, charlm, corpus


def test_nanogpt_cpu_has_the_published_values():
    # README: --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000
    # --lr_decay_iters=2000; config/train_shakespeare_char.py: lr 1e-3, min_lr 1e-4, warmup 100;
    # train.py: weight_decay 1e-1
    r = charlm.nanogpt_cpu()
    assert (r.n_layer, r.n_head, r.n_embd, r.context, r.batch_size, r.steps) == (4, 4, 128, 64, 12, 2000)
    assert (r.lr, r.warmup, r.weight_decay) == (1e-3, 100, 0.1)
    assert math.isclose(r.lr * r.min_lr_ratio, 1e-4)
    t = r.train_config()
    assert math.isclose(t.lr_at(r.warmup), 1e-3) and math.isclose(t.lr_at(r.steps), 1e-4)
    text = corpus.builtin()
    model = r.trainer(text).model
    assert model.lm_head.weight is model.wte.weight  # tied, as in nanoGPT
    n_params = sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2)
    # nanoGPT's matrices: 12 * n_layer * n_embd^2 in the blocks, the token and position tables
    assert n_params == 12 * 4 * 128 ** 2 + (text.vocab_size + 64) * 128


def test_schedule_ends_at_the_recipe_floor():
    r = dataclasses.replace(charlm.app_default(), min_lr_ratio=0.25)
    t = r.train_config()
    assert math.isclose(t.lr_at(r.steps), 0.25 * r.lr) and math.isclose(t.lr_at(r.warmup - 1), r.lr)


def test_app_default_learns_the_builtin_text():
    text = corpus.builtin()
    torch.set_num_threads(1)
    r = dataclasses.replace(charlm.app_default(), steps=150)
    curve = charlm.train_curve(r, text, eval_every_steps=150)
    start, end = curve.points[0][2], curve.final_loss
    assert abs(start - text.uniform_loss()) < 0.3  # an untrained model knows nothing: about ln(76) = 4.33
    assert end < text.uniform_loss() - 1.3  # well under ln(vocab): it has learned which characters follow which
    assert [p[1] for p in curve.points] == [0, 150] and curve.points[1][0] > 0


def test_bench_quick_writes_both_curves(tmp_path, capsys):
    out = tmp_path / "results.json"
    bench.main(["charlm", "--quick", "--json", str(out)])
    data = json.loads(out.read_text())
    for key in ("recipe", "default", "longer"):
        points = data[key]["points"]
        assert points[0]["step"] == 0 and points[-1]["step"] == data[key]["recipe"]["steps"]
        assert all(a["seconds"] <= b["seconds"] for a, b in zip(points, points[1:]))
        assert points[-1]["loss"] < points[0]["loss"]
    assert data["figures"]["recipe_final_loss"] == data["recipe"]["points"][-1]["loss"]
    assert data["corpus"]["name"] == "emma"
    assert "the recipe ends at" in capsys.readouterr().out


def test_the_runs_train_in_turns(monkeypatch):
    """Each run trains to its next evaluation, then the next one does: a change of load falls on both."""
    order = []
    advance = charlm.Trainer.advance

    def spy(self, steps=None, seconds=None):
        order.append((id(self), self.step))
        return advance(self, steps, seconds)

    monkeypatch.setattr(charlm.Trainer, "advance", spy)
    tiny = dataclasses.replace(charlm.app_default(), n_layer=1, n_embd=32, n_head=2, batch_size=2, steps=4, warmup=1)
    a, b = charlm.train_curves([(tiny, 2), (dataclasses.replace(tiny, steps=6), 2)], corpus.builtin())
    who = [i for i, _ in order]
    assert who[0] != who[1] and who[0] == who[2] and who[1] == who[3]  # alternating
    assert [p[1] for p in a.points] == [0, 2, 4] and [p[1] for p in b.points] == [0, 2, 4, 6]


def test_bench_training_quick(tmp_path):
    out = tmp_path / "training.json"
    bench.main(["training", "--quick", "--json", str(out)])
    data = json.loads(out.read_text())
    assert set(data["curriculum"]["arms"]) == {"curriculum", "fixed"}
    assert set(data["precision"]["arms"]) == {"bf16", "fp32"}
    assert data["ddp"]["max_abs_param_diff"] < 1e-3 and len(data["ddp"]["workers"]) == 2
