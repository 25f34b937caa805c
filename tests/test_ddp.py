"""Data-parallel training (explorer.train_ddp): two gloo workers on 127.0.0.1 take the step of one
process on the global batch; a dead or hung worker is reported and no worker is left running."""
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file

from explorer.corpus import DATA
from explorer.model import build_model
from explorer.train_ddp import DDPError, DDPSettings, LocalRun, max_abs_diff, run_local, single_process

ROOT = Path(__file__).resolve().parents[1]
# Float32 rounding is the only difference: the all-reduce adds the two workers' half-batch gradient means in
# another order than one process sums the whole batch (about 1e-7 relative), and AdamW's division by
# sqrt(v) carries that into the update. After a few steps the gap measured about 2e-6; training moves the
# parameters by about 1e-2 in those steps (asserted below), four orders of magnitude more.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> str:
    """The first 60,000 characters of the built-in novel: a worker builds its corpus in a blink."""
    path = tmp_path_factory.mktemp("ddp") / "emma_head.txt"
    path.write_text((DATA / "emma.txt").read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def settings(small_corpus) -> DDPSettings:
    return DDPSettings(workers=2, steps=4, batch_size=8, length=32, n_layer=1, n_head=2, n_embd=32,
                       seed=3, timeout_s=120, corpus=small_corpus)


@pytest.fixture(scope="module")
def launched(settings, tmp_path_factory):
    """The launcher from the command line, as a user runs it: (its JSON, the parameters it saved)."""
    out = tmp_path_factory.mktemp("ddp_run") / "result.json"
    args = [f"--workers={settings.workers}", f"--steps={settings.steps}", f"--batch-size={settings.batch_size}",
            f"--length={settings.length}", f"--n-layer={settings.n_layer}", f"--n-head={settings.n_head}",
            f"--n-embd={settings.n_embd}", f"--seed={settings.seed}", f"--timeout={settings.timeout_s}",
            f"--corpus={settings.corpus}", f"--json={out}"]
    proc = subprocess.run([sys.executable, "-m", "explorer.train_ddp", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    return data, load_file(data["params"])


def assert_all_gone(pids) -> None:
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # killed and reaped: not even a zombie is left
            os.kill(pid, 0)


def test_two_workers_take_the_single_process_step(settings, launched):
    _, params = launched
    reference = single_process(settings)
    assert params.keys() == reference.keys()
    print("max |2 workers - 1 process|:", max_abs_diff(params, reference))
    assert max_abs_diff(params, reference) < TOLERANCE
    initial = build_model(settings.model_config(len(set(Path(settings.corpus).read_text(encoding="utf-8")))),
                          settings.seed).state_dict()
    assert max_abs_diff(params, initial) > 30 * TOLERANCE  # it trained: the match is not two untouched models


def test_launcher_json_has_per_worker_throughput(settings, launched):
    data, _ = launched
    assert data["world"] == 2 and data["backend"] == "gloo"
    assert [w["rank"] for w in data["workers"]] == [0, 1]
    rows = settings.batch_size // settings.workers
    for w in data["workers"]:
        assert w["steps"] == settings.steps
        assert w["step_s"] > 0
        assert w["tokens_per_s"] == pytest.approx(rows * settings.length / w["step_s"])
    vocab = len(set(Path(settings.corpus).read_text(encoding="utf-8")))
    assert 0 < data["final_loss"] < math.log(vocab) + 0.5
    assert len(data["checksum"]) == 64


def test_dead_worker_is_reported_and_every_worker_ended(settings):
    with pytest.raises(DDPError) as info:
        run_local(replace(settings, fail_rank=1))
    message = str(info.value)
    assert "rank 1 exited with code 3" in message
    assert "failing on purpose" in message  # the tail of its stderr
    assert_all_gone(info.value.pids)


def test_hung_worker_hits_the_timeout_and_is_killed(settings):
    # A short timeout (the launcher's, from the start), polled only once rank 1 has reached its hang: a
    # loaded machine may take longer than that just to start the workers (importing torch). Rank 0 waits
    # in the rendezvous for as long, from when it got there, so the launcher's timeout comes first.
    run = LocalRun(replace(settings, hang_rank=1, timeout_s=8))
    try:
        err = run.dir / "rank1.err"
        for _ in range(1200):  # up to 2 minutes to start
            if err.exists() and "hanging on purpose" in err.read_text(errors="replace"):
                break
            time.sleep(0.1)
        with pytest.raises(DDPError) as info:
            while not run.poll(wait_s=1.0):
                pass
    finally:
        run.close()
        run._dir.cleanup()
    message = str(info.value)
    assert "hung" in message and "after 8 s" in message
    assert "hanging on purpose" in message  # rank 1 really reached its hang (it never joins; rank 0 waits for it)
    assert_all_gone(info.value.pids)


def test_settings_refuse_an_uneven_split(settings):
    with pytest.raises(ValueError, match="multiple of 3"):
        run_local(replace(settings, workers=3))
