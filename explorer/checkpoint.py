"""Checkpoints: a trained model as safetensors weights and a JSON config, never a pickle.

A checkpoint is two files:
- ``model.safetensors``: every tensor of the model's ``state_dict`` in the safetensors format
  (Hugging Face, 2022): an 8-byte little-endian header length, a JSON header naming each
  tensor's dtype, shape and byte range, then the raw bytes. Reading it runs no code. A tensor
  shared by two names (GPT-2's weight tying: ``lm_head.weight`` *is* ``wte.weight``, Press & Wolf
  2017) is stored once, under its first name; the config lists the alias and loading re-ties it
  (the model's own constructor ties them; both names then hold one Parameter).
- ``config.json``: ``format`` and ``version``, every ``ModelConfig`` field, the tokenizer's
  characters, ``meta`` (free-form: what the model was trained on, steps, seed, ...), the aliases
  and the sha256 of the weights file, so weights paired with another model's config are refused.

``bundle`` puts both in one zip (exactly those two members) to download and upload as one file.

Everything read from a user is checked before it is used: the safetensors header is parsed here
(length, JSON, dtypes, shapes, byte ranges, truncation) before ``safetensors.torch.load`` sees the
bytes; the config is validated by ``ModelConfig`` itself; tensor names, shapes and dtypes are
compared with the model the config describes; the hash, and finiteness. Any problem raises
``CheckpointError`` (a ``ValueError``) with a sentence for the page, never anything else. Nothing
is ever unpickled (no ``torch.load``, no ``pickle``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import struct
import zipfile
from dataclasses import dataclass
from typing import Optional

import torch

from .config import ModelConfig
from .model import GPT, build_model

FORMAT = "transformer-explorer-checkpoint"  # config.json's "format"
VERSION = 1  # config.json's "version": the layout this module writes and reads
WEIGHTS = "model.safetensors"  # the bundle's two members
CONFIG = "config.json"
MAX_WEIGHTS_BYTES = 200_000_000  # largest weights file read (the largest Lab model is about 20 MB)
MAX_CONFIG_BYTES = 4_000_000  # largest config read (a Lab run's loss history fits)
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on its JSON header
MAX_BUNDLE_BYTES = MAX_WEIGHTS_BYTES + MAX_CONFIG_BYTES + 1_000_000  # the zip itself, with its directory
DTYPES = {  # safetensors dtype name -> (torch dtype, bytes per element)
    "F64": (torch.float64, 8), "F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8), "I32": (torch.int32, 4), "I16": (torch.int16, 2), "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1), "BOOL": (torch.bool, 1),
}
DTYPE_NAMES = {t: name for name, (t, _) in DTYPES.items()}
SHOWN = 3  # names listed in a message before "and N more"


class CheckpointError(ValueError):
    """A file that is not a checkpoint this app can open; the message says why, for the page."""


@dataclass
class Checkpoint:
    model: GPT  # in eval mode, the weights as saved, lm_head tied to wte
    chars: str  # the tokenizer's characters: token i is chars[i]
    meta: dict  # what the model was trained on (free-form, as saved)
    config: ModelConfig


# ---------------------------------------------------------------------------------------------- writing
def aliases(model: torch.nn.Module) -> dict[str, str]:
    """Names in the state dict that hold the same tensor as an earlier name -> that name
    (``{"lm_head.weight": "wte.weight"}`` for a weight-tied GPT)."""
    first: dict[int, str] = {}
    out = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in first:
            out[name] = first[id(t)]
        else:
            first[id(t)] = name
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def config_dict(config: ModelConfig) -> dict:
    return {f.name: list(v) if isinstance(v := getattr(config, f.name), tuple) else v
            for f in dataclasses.fields(ModelConfig)}


def export(model: GPT, tokenizer_chars: str, meta: Optional[dict] = None) -> tuple[bytes, bytes]:
    """The model as ``(weights, config)``: safetensors bytes (tied tensors once) and JSON bytes."""
    from safetensors.torch import save

    tied = aliases(model)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in tied}
    weights = save(tensors, metadata={"format": "pt", "producer": FORMAT})
    config = {"format": FORMAT, "version": VERSION, "model": config_dict(model.config), "chars": tokenizer_chars,
              "meta": dict(meta or {}), "tied": tied, "weights_sha256": sha256(weights)}
    return weights, json.dumps(config, indent=1, ensure_ascii=False).encode("utf-8")


def bundle(model: GPT, tokenizer_chars: str, meta: Optional[dict] = None) -> bytes:
    """One zip holding exactly ``model.safetensors`` and ``config.json``."""
    weights, config = export(model, tokenizer_chars, meta)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(CONFIG, config)
        z.writestr(WEIGHTS, weights, zipfile.ZIP_STORED)  # float bits barely compress (8 %) and deflate costs seconds
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- reading
def listed(names: list[str]) -> str:
    shown = ", ".join(n if len(n) <= 80 else n[:77] + "..." for n in names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def read_header(data: bytes) -> dict:
    """The safetensors header of ``data`` (name -> {dtype, shape, data_offsets}), checked against
    the bytes that follow it: every range inside the file, back to back, covering it exactly."""
    if len(data) > MAX_WEIGHTS_BYTES:
        raise CheckpointError(f"The weights file is {len(data):,} bytes; at most {MAX_WEIGHTS_BYTES:,} are read.")
    if len(data) < 8:
        raise CheckpointError(f"The weights file holds only {len(data)} bytes: it is not a safetensors file.")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or n < 2:
        raise CheckpointError(f"This is not a safetensors file: its first 8 bytes would announce a header of "
                              f"{n:,} bytes. Open a model saved by this app (model.safetensors).")
    if 8 + n > len(data):
        raise CheckpointError(f"The weights file is truncated: its header alone should take {n:,} bytes, and the "
                              f"file holds {len(data) - 8:,} after the length. Download it again.")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError("This is not a safetensors file: its header is not JSON.") from None
    if not isinstance(header, dict):
        raise CheckpointError("This is not a safetensors file: its header is not a JSON object.")
    header.pop("__metadata__", None)
    ranges = []
    for name, entry in header.items():
        ok = (isinstance(entry, dict) and entry.get("dtype") in DTYPES and isinstance(entry.get("shape"), list)
              and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in entry["shape"])
              and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
              and all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in entry["data_offsets"]))
        if not ok:
            raise CheckpointError(f"The safetensors header's entry {name!r} is malformed (it needs a known dtype, a "
                                  "shape and two byte offsets).")
        begin, end = entry["data_offsets"]
        numel = 1
        for d in entry["shape"]:
            numel *= d
        if end - begin != numel * DTYPES[entry["dtype"]][1]:
            raise CheckpointError(f"The safetensors header's entry {name!r} says {end - begin:,} bytes for a "
                                  f"{entry['dtype']} tensor of shape {tuple(entry['shape'])}, which needs "
                                  f"{numel * DTYPES[entry['dtype']][1]:,}.")
        ranges.append((begin, end, name))
    stored = len(data) - 8 - n
    ranges.sort()
    need = ranges[-1][1] if ranges else 0
    if need > stored:
        raise CheckpointError(f"The weights file is truncated: its header describes {need:,} bytes of tensors and "
                              f"the file holds {stored:,}. Download it again.")
    at = 0
    for begin, end, name in ranges:
        if begin != at:
            raise CheckpointError(f"The safetensors header's byte ranges overlap or leave gaps (at {name!r}).")
        at = end
    if stored != need:
        raise CheckpointError(f"The weights file has {stored - need:,} bytes after its last tensor: it is not the "
                              "file this app saved.")
    return header


def read_config(data: bytes) -> dict:
    """config.json, checked: the format, the version, the fields of each part."""
    if len(data) > MAX_CONFIG_BYTES:
        raise CheckpointError(f"config.json is {len(data):,} bytes; at most {MAX_CONFIG_BYTES:,} are read.")
    try:
        config = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CheckpointError("config.json is not JSON: open the config saved with these weights.") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"config.json is not a {FORMAT} config (its \"format\" should be {FORMAT!r}).")
    if config.get("version") != VERSION:
        raise CheckpointError(f"config.json is version {config.get('version')!r}; this app reads version {VERSION}.")
    for key, kind, what in (("model", dict, "an object"), ("chars", str, "a string"), ("meta", dict, "an object"),
                            ("tied", dict, "an object"), ("weights_sha256", str, "a string")):
        if not isinstance(config.get(key), kind):
            raise CheckpointError(f"config.json's {key!r} should be {what}.")
    return config


def model_config(fields: dict) -> ModelConfig:
    """A ``ModelConfig`` from config.json's "model": every field present, each valid."""
    names = [f.name for f in dataclasses.fields(ModelConfig)]
    missing, extra = [n for n in names if n not in fields], [n for n in fields if n not in names]
    if missing or extra:
        raise CheckpointError("config.json's model " + "; ".join(
            part for part in (missing and f"lacks {listed(missing)}", extra and f"has unknown fields {listed(extra)}")
            if part) + ".")
    values = dict(fields, funnel=tuple(fields["funnel"]) if isinstance(fields["funnel"], list) else fields["funnel"])
    try:
        return ModelConfig(**values)
    except ValueError as e:
        raise CheckpointError(f"config.json's model is not possible: {e}.") from None
    except TypeError:
        raise CheckpointError("config.json's model has a field of the wrong type.") from None


def expected_tensors(config: ModelConfig) -> tuple[dict, dict]:
    """The tensors a model of ``config`` stores (name -> (shape, dtype)), tied aliases left out,
    and those aliases; read from a model built on the meta device (no memory, no random draws)."""
    with torch.device("meta"):
        model = GPT(config)
    tied = aliases(model)
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items() if k not in tied}, tied


def check_tensors(header: dict, config: ModelConfig, tied: dict) -> None:
    expected, model_tied = expected_tensors(config)
    if tied != model_tied:
        raise CheckpointError(f"config.json ties {tied or 'nothing'}; a model of this config ties {model_tied}.")
    missing = [k for k in expected if k not in header]
    extra = [k for k in header if k not in expected]
    if missing:
        raise CheckpointError(f"The weights lack {len(missing)} tensor(s) this model needs: {listed(missing)}. "
                              "These weights belong to another model.")
    if extra:
        raise CheckpointError(f"The weights hold {len(extra)} tensor(s) this model does not have: {listed(extra)}. "
                              "These weights belong to another model.")
    wrong = [f"{k} is {tuple(header[k]['shape'])}, expected {shape}" for k, (shape, _) in expected.items()
             if tuple(header[k]["shape"]) != shape]
    if wrong:
        raise CheckpointError(f"{len(wrong)} tensor(s) have the wrong shape for this config: {listed(wrong)}.")
    wrong = [f"{k} is {header[k]['dtype']}, expected {DTYPE_NAMES.get(dtype, str(dtype))}"
             for k, (_, dtype) in expected.items() if DTYPES[header[k]["dtype"]][0] != dtype]
    if wrong:
        raise CheckpointError(f"{len(wrong)} tensor(s) have the wrong dtype for this config: {listed(wrong)}.")


def load(weights: bytes, config: bytes) -> Checkpoint:
    """The model saved as ``weights`` (safetensors) and ``config`` (JSON), checked; in eval mode."""
    header = read_header(weights)
    cfg = read_config(config)
    model_cfg = model_config(cfg["model"])
    chars = cfg["chars"]
    if len(chars) != model_cfg.vocab_size or len(set(chars)) != len(chars):
        raise CheckpointError(f"config.json's chars hold {len(set(chars))} distinct of {len(chars)} characters; the "
                              f"model reads {model_cfg.vocab_size} tokens, one per distinct character.")
    check_tensors(header, model_cfg, cfg["tied"])
    if sha256(weights) != cfg["weights_sha256"]:
        raise CheckpointError("These weights are not the ones this config was saved with (their sha256 differs): "
                              "the file was changed or damaged, or the two files come from different saves.")
    from safetensors.torch import load as load_safetensors

    try:
        tensors = load_safetensors(weights)
    except Exception as e:  # the header was checked above; anything left is a damaged file
        raise CheckpointError(f"The weights file could not be read: {e}.") from None
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{len(bad)} tensor(s) hold NaN or infinite values: {listed(bad)}.")
    model = build_model(model_cfg, 0)
    state = dict(tensors, **{alias: tensors[name] for alias, name in cfg["tied"].items()})
    model.load_state_dict(state, strict=True)
    return Checkpoint(model.eval(), chars, cfg["meta"], model_cfg)


def load_bundle(data: bytes) -> Checkpoint:
    """The model in a zip made by ``bundle``: exactly ``model.safetensors`` and ``config.json``,
    their sizes checked before anything is decompressed."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise CheckpointError(f"The file is {len(data):,} bytes; at most {MAX_BUNDLE_BYTES:,} are read.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            names = sorted(i.filename for i in infos)
            if any(n.endswith(".pkl") for n in names):
                raise CheckpointError("This is a PyTorch (torch.save) file: it holds a pickle, which can run code "
                                      "when opened, so this app never opens one. Open a model saved by this app "
                                      f"(a .zip holding {WEIGHTS} and {CONFIG}).")
            if names != sorted([WEIGHTS, CONFIG]):
                raise CheckpointError(f"The zip should hold exactly {WEIGHTS} and {CONFIG}; it holds "
                                      f"{listed(names) or 'nothing'}. Open a model saved by this app.")
            limits = {WEIGHTS: MAX_WEIGHTS_BYTES, CONFIG: MAX_CONFIG_BYTES}
            for info in infos:  # every declared size, before anything is decompressed
                if info.file_size > limits[info.filename]:
                    raise CheckpointError(f"{info.filename} would unpack to {info.file_size:,} bytes; at most "
                                          f"{limits[info.filename]:,} are read.")
            parts = {}
            for info in infos:
                limit = limits[info.filename]
                with z.open(info) as f:
                    parts[info.filename] = f.read(limit + 1)  # never more than the limit, whatever the zip claims
                if len(parts[info.filename]) > limit:
                    raise CheckpointError(f"{info.filename} unpacks to more than {limit:,} bytes.")
    except CheckpointError:
        raise
    except zipfile.BadZipFile:
        raise CheckpointError("This file is not a zip: open a model saved by this app (a .zip holding "
                              f"{WEIGHTS} and {CONFIG}).") from None
    except Exception as e:  # encrypted members, unknown compression, a damaged stream
        raise CheckpointError(f"The zip could not be read: {e}.") from None
    return load(parts[WEIGHTS], parts[CONFIG])
