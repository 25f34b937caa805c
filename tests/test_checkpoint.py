"""Checkpoints (explorer.checkpoint): safetensors + JSON round trips bit-identical with the tie kept;
every bad file refused with CheckpointError and its message, nothing ever unpickled; and the Lab's
save / open through the page (AppTest)."""
import io
import json
import pickle
import random
import struct
import zipfile

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from explorer import checkpoint as ckpt
from explorer.checkpoint import CheckpointError, bundle, export, load, load_bundle
from explorer.config import ModelConfig
from explorer.model import build_model

CHARS = "abcdefghijklmnopqrstuvwxyz=.,;:!"  # 32 distinct: the default vocab_size
SMALL = dict(n_embd=32, n_head=4, block_size=16)
CONFIGS = {
    "softmax_learned": ModelConfig(**SMALL),
    "rope_sliding": ModelConfig(**SMALL, encoding="rope", attention="sliding_window", window=4),
    "moe": ModelConfig(**SMALL, ffn="moe", n_experts=4, top_k=2),
    "alibi_rms_funnel": ModelConfig(**SMALL, encoding="alibi", norm="rmsnorm", n_layer=3, funnel=(2,)),
}


def trained_like(config: ModelConfig, seed: int = 7):
    """A model whose weights are not any seed's initial ones (noise added): a loader that built a
    fresh model instead of reading the file would be caught."""
    model = build_model(config, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def message(fn, *args) -> str:
    with pytest.raises(CheckpointError) as e:
        fn(*args)
    return str(e.value)


def rehashed(config_bytes: bytes, weights: bytes, **changes) -> bytes:
    """A config for other weights (the hash matching them), with top-level changes."""
    c = json.loads(config_bytes)
    c.update(changes, weights_sha256=ckpt.sha256(weights))
    return json.dumps(c).encode()


@pytest.fixture(scope="module")
def saved():
    model = trained_like(CONFIGS["softmax_learned"])
    weights, config = export(model, CHARS, {"task": "test", "steps": 3, "seed": 7})
    return model, weights, config


# ---------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip_is_bit_identical_and_keeps_the_tie(name):
    model = trained_like(CONFIGS[name])
    meta = {"corpus": "emma", "steps": 12, "seed": 7}
    weights, config = export(model, CHARS, meta)
    header_names = json.loads(weights[8:8 + struct.unpack("<Q", weights[:8])[0]])
    assert "lm_head.weight" not in header_names and "wte.weight" in header_names  # the tied tensor stored once
    for ck in (load(weights, config), load_bundle(bundle(model, CHARS, meta))):
        assert ck.config == model.config and ck.chars == CHARS and ck.meta == meta
        assert not ck.model.training
        assert ck.model.lm_head.weight is ck.model.wte.weight  # re-tied: one Parameter under both names
        a, b = model.state_dict(), ck.model.state_dict()
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
        idx = torch.randint(0, len(CHARS), (2, model.config.block_size), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert torch.equal(model(idx).logits, ck.model(idx).logits)
    c = json.loads(config)
    assert c["format"] == ckpt.FORMAT and c["version"] == ckpt.VERSION and c["tied"] == {"lm_head.weight": "wte.weight"}
    assert c["model"] == {k: list(v) if isinstance(v, tuple) else v for k, v in vars(model.config).items()}


# ---------------------------------------------------------------------------------------------- refusals
def test_not_safetensors_is_refused(saved):
    _, weights, config = saved
    png = b"\x89PNG\r\n\x1a\n" + bytes(200)
    assert "not a safetensors file" in message(load, png, config)
    assert "not a zip" in message(load_bundle, png)
    assert "not a safetensors file" in message(load, struct.pack("<Q", 2**40) + weights[8:], config)  # absurd length
    assert "only 3 bytes" in message(load, b"abc", config)
    assert "header is not JSON" in message(load, struct.pack("<Q", 12) + b"not json!!!!" + bytes(8), config)
    assert "not a JSON object" in message(load, struct.pack("<Q", 2) + b"[]", config)
    bad_entry = json.dumps({"wte.weight": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}}).encode()
    assert "malformed" in message(load, struct.pack("<Q", len(bad_entry)) + bad_entry + bytes(4), config)


def test_truncated_weights_are_refused(saved):
    _, weights, config = saved
    assert "truncated: its header describes" in message(load, weights[:-5], config)
    assert "truncated: its header alone" in message(load, weights[:100], config)
    assert "bytes after its last tensor" in message(load, weights + b"\0\0", config)
    data = bundle(*saved[:1], CHARS)
    assert "not a zip" in message(load_bundle, data[: len(data) // 2])


def test_bad_configs_are_refused(saved):
    _, weights, config = saved
    assert "config.json is not JSON" in message(load, weights, b"{oops")
    assert "config.json is not JSON" in message(load, weights, b"\xff\xfe")
    assert "format" in message(load, weights, rehashed(config, weights, format="nanogpt"))
    assert "version 2" in message(load, weights, rehashed(config, weights, version=2))
    c = json.loads(config)
    del c["model"]["n_head"]
    assert "lacks n_head" in message(load, weights, json.dumps(c).encode())
    c = json.loads(config)
    c["model"]["dropout"] = 0.1
    assert "unknown fields dropout" in message(load, weights, json.dumps(c).encode())
    c = json.loads(config)
    c["model"]["n_head"] = 3  # does not divide n_embd = 32: ModelConfig's own message is shown
    with pytest.raises(ValueError) as own:
        ModelConfig(**dict(c["model"], funnel=()))
    assert str(own.value) in message(load, weights, json.dumps(c).encode())
    c = json.loads(config)
    c["model"]["funnel"] = 5  # ModelConfig raises TypeError on it: still a CheckpointError
    assert "config.json's model has a field of the wrong type" in message(load, weights, json.dumps(c).encode())
    assert "chars" in message(load, weights, rehashed(config, weights, chars=CHARS[:-1]))
    assert "'meta' should be an object" in message(load, weights, rehashed(config, weights, meta=[1]))


def test_tensors_that_do_not_fit_the_config_are_refused(saved):
    model, weights, config = saved
    tensors = st_load(weights)
    fewer = st_save({k: v for k, v in tensors.items() if k != "blocks.0.ln_1.weight"})
    assert "lack 1 tensor(s) this model needs: blocks.0.ln_1.weight" in message(load, fewer, rehashed(config, fewer))
    more = st_save(dict(tensors, **{"extra.weight": torch.zeros(2)}))
    assert "does not have: extra.weight" in message(load, more, rehashed(config, more))
    wide = trained_like(ModelConfig(**dict(SMALL, n_embd=64)))
    w64, _ = export(wide, CHARS)
    msg = message(load, w64, config)  # another model's weights with this config
    assert "wrong shape for this config" in msg and "wte.weight is (32, 64), expected (32, 32)" in msg
    assert "more" in msg  # the first few named, the rest counted
    doubles = st_save({k: v.double() for k, v in tensors.items()})
    msg = message(load, doubles, rehashed(config, doubles))
    assert "wrong dtype" in msg and "is F64, expected F32" in msg


def test_changed_weights_are_refused_by_their_hash(saved):
    _, weights, config = saved
    flipped = bytearray(weights)
    flipped[-3] ^= 0x01  # one bit of the last tensor: still well-formed safetensors
    assert "sha256 differs" in message(load, bytes(flipped), config)


def test_non_finite_weights_are_refused():
    model = trained_like(CONFIGS["softmax_learned"])
    with torch.no_grad():
        model.blocks[0].ln_1.weight[3] = float("nan")
        model.ln_f.bias[0] = float("inf")
    weights, config = export(model, CHARS)
    msg = message(load, weights, config)
    assert "NaN or infinite" in msg and "blocks.0.ln_1.weight" in msg and "ln_f.bias" in msg


def test_zips_with_other_members_or_too_large_are_refused_before_reading(saved, monkeypatch):
    model = saved[0]
    data = bundle(model, CHARS)
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("run.py", b"print('hi')")
    assert "exactly model.safetensors and config.json; it holds config.json, model.safetensors, run.py" in \
        message(load_bundle, buf.getvalue())
    bomb = io.BytesIO()  # 20 MB of zeros in a few KB: its declared size is refused before anything is unpacked
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(ckpt.CONFIG, b"{}")
        z.writestr(ckpt.WEIGHTS, bytes(20_000_000))
    assert len(bomb.getvalue()) < 100_000
    monkeypatch.setattr(ckpt, "MAX_WEIGHTS_BYTES", 1_000_000)
    opened = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a) or 1 / 0)
    assert "would unpack to 20,000,000 bytes; at most 1,000,000" in message(load_bundle, bomb.getvalue())
    monkeypatch.setattr(ckpt, "MAX_BUNDLE_BYTES", 1000)
    assert "at most 1,000 are read" in message(load_bundle, data)
    assert opened == []  # nothing was decompressed


PICKLE_RAN = []


def _set_flag():
    PICKLE_RAN.append(True)
    return "pwned"


class Payload:
    """An object whose unpickling runs code (sets the flag): what a malicious .pt file does."""

    def __reduce__(self):
        return _set_flag, ()


def test_pickles_are_refused_and_never_unpickled(saved, monkeypatch):
    _, _, config = saved
    buf = io.BytesIO()
    torch.save({"model": Payload()}, buf)  # torch's own format: a zip with data.pkl inside
    torch_file = buf.getvalue()
    raw_pickle = pickle.dumps(Payload())
    assert not PICKLE_RAN  # saving ran nothing
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle.loads called"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("pickle.load called"))
    assert "PyTorch (torch.save) file" in message(load_bundle, torch_file)
    assert "not a safetensors file" in message(load, torch_file, config)
    assert "not a safetensors file" in message(load, raw_pickle, config)
    assert "not a zip" in message(load_bundle, raw_pickle)
    assert not PICKLE_RAN
    monkeypatch.undo()
    pickle.loads(raw_pickle)  # the payload is live: unpickling it does set the flag
    assert PICKLE_RAN


def test_damaged_files_only_ever_raise_checkpoint_error(saved):
    """Random byte flips anywhere in a bundle, or in the weights' header: each file loads or is
    refused with CheckpointError, nothing else escapes."""
    model, weights, config = saved
    data = bundle(model, CHARS)
    n = struct.unpack("<Q", weights[:8])[0]
    rng = random.Random(0)
    refused = 0
    for i in range(150):
        if i % 2:
            b, pos = bytearray(data), rng.randrange(len(data))
        else:
            b, pos = bytearray(weights), rng.randrange(8 + n)
        b[pos] ^= 1 << rng.randrange(8)
        try:
            load_bundle(bytes(b)) if i % 2 else load(bytes(b), config)
        except CheckpointError:
            refused += 1
    assert refused > 100


# ---------------------------------------------------------------------------------------------- the Lab
def test_lab_bundle_refuses_other_models_and_other_settings():
    from explorer import lab

    not_lab = bundle(trained_like(CONFIGS["softmax_learned"]), CHARS, {"corpus": "emma", "steps": 5})
    assert "not trained in the Attention Lab (it was trained on 'emma')" in message(lab.open_bundle, not_lab, "x.zip")
    settings = lab.LabSettings(length=4, n_embd=32)
    model = lab.untrained(settings)
    meta = {"source": lab.LAB_SOURCE, "settings": vars(settings) | {"n_layer": 3}, "steps": 0, "total": 10}
    data = bundle(model, settings.task_obj.chars, meta)
    assert "describe another model than its weights: n_layer differ" in message(lab.open_bundle, data, "x.zip")
    meta["settings"] = vars(settings) | {"steps": "many"}
    assert "wrong type: steps" in message(lab.open_bundle, bundle(model, settings.task_obj.chars, meta), "x.zip")
    meta["settings"] = vars(settings) | {"steps": 5}
    assert "steps = 5 (10 to 20000)" in message(lab.open_bundle, bundle(model, settings.task_obj.chars, meta), "x")


def test_lab_saves_a_trained_model_and_a_fresh_session_opens_it(monkeypatch):
    import streamlit as st

    from apptest_helpers import assert_clean, open_page, run_until

    given = {}
    real = st.download_button

    def spy(label, data, file_name=None, *a, **k):  # what the page hands the browser on a click
        given.update(data=data, name=file_name)
        return real(label, data, file_name, *a, **k)

    monkeypatch.setattr(st, "download_button", spy)
    at = open_page("pages/attention_lab.py")
    at.sidebar.slider(key="lab_length").set_value(4)
    at.sidebar.number_input(key="lab_steps").set_value(40)
    at.sidebar.number_input(key="lab_seed").set_value(3)
    at.sidebar.toggle(key="lab_until_learned").set_value(False)
    at.run()
    assert "data" not in given  # no trained model: no download button
    at.button(key="lab_train").click().run()
    run_until(at, lambda a: a.session_state["lab_run"].training)
    assert_clean(at)
    data = given["data"]()
    assert given["name"] == "lab-reverse-len4-softmax-learned-L2-H4-C64-seed3.zip"
    trained = at.session_state["lab_run"].current()
    output = [h.proto.body for h in at.get("html")]

    fresh = open_page("pages/attention_lab.py")  # another session: default controls, untrained
    assert fresh.sidebar.slider(key="lab_length").value == 16
    fresh.file_uploader(key="lab_open").upload(given["name"], data, "application/zip")
    fresh.run()
    assert_clean(fresh)
    assert any("Opened" in s.value and "40 of 40 steps" in s.value for s in fresh.success)
    assert fresh.sidebar.slider(key="lab_length").value == 4  # the settings it was trained with, restored
    assert fresh.sidebar.number_input(key="lab_seed").value == 3
    opened = fresh.session_state["lab_run"]
    a, b = trained.model.state_dict(), opened.current().model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert opened.current().history == [tuple(h) for h in trained.history]  # the loss curve comes along
    assert [h.proto.body for h in fresh.get("html")] == output  # the same output, shaded the same
    assert not any("controls describe a different model" in i.value for i in fresh.info)

    fresh.file_uploader(key="lab_open").set_value(("cat.zip", b"\x89PNG\r\n\x1a\n" + bytes(64), "application/zip"))
    fresh.run()  # a bad file: the message, and the opened model stays
    assert_clean(fresh)
    assert any("not a zip" in e.value and "unchanged" in e.value for e in fresh.error)
    assert fresh.session_state["lab_run"] is opened
    assert [h.proto.body for h in fresh.get("html")] == output
