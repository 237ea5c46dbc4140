"""Read weight files safely and load them strictly, with one clear message on any mismatch.

Pickled checkpoints (`.bin`, `.pt`, `.pth`) load only through `torch.load(weights_only=True)`, which
refuses any pickle that would construct arbitrary objects or run code; `.safetensors` cannot carry
code at all.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt"}
SAFETENSORS_SUFFIXES = {".safetensors"}
SHOWN_KEYS = 3


class CheckpointError(ValueError):
    """A weights file that cannot be used: missing, unreadable, unsafe, or of another architecture."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from `.safetensors` or a weights-only pickle; strip a leading `module.`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; pass the path of a .safetensors or .bin file")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        state = _read_safetensors(path)
    elif suffix in PICKLE_SUFFIXES:
        state = _read_weights_only_pickle(path)
    else:
        known = ", ".join(sorted(SAFETENSORS_SUFFIXES | PICKLE_SUFFIXES))
        raise CheckpointError(f"{path}: unknown checkpoint type {suffix or '(none)'}; use one of {known}")

    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict (expected a mapping of names to tensors)")
    return {_strip_module_prefix(k): v for k, v in state.items()}


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable safetensors file ({_first_line(err)}); is it truncated?") from None


def _read_weights_only_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing them
            warnings.simplefilter("ignore", UserWarning)
            return _torch_load(path)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused, not a plain tensor checkpoint ({_unpickling_detail(err)}); weights-only "
            "loading ran none of it; if you trust the file, convert it to .safetensors elsewhere"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({_first_line(err)}); is it truncated?") from None


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format


def _unpickling_detail(err: BaseException) -> str:
    """The informative line of torch's long weights-only error (the object or opcode it stopped at)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line:
            return "it would import " + line.split("GLOBAL", 1)[1].split()[0] + ", which could run code"
    for marker in ("Unsupported operand", "invalid load key", "Unsupported"):
        for line in lines:
            if marker in line:
                return line[:120]
    return _first_line(err)


def _strip_module_prefix(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming counts and the first few missing, unexpected and wrong-shape keys."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if not (missing or unexpected or wrong_shape):
        return
    parts = [
        f"{source}: does not fit {type(model).__name__} "
        f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong_shape)} wrong-shape keys"
        f" of {len(expected)} expected)"
    ]
    if missing:
        parts.append("missing: " + ", ".join(missing[:SHOWN_KEYS]))
    if unexpected:
        parts.append("unexpected: " + ", ".join(unexpected[:SHOWN_KEYS]))
    if wrong_shape:
        parts.append(
            "wrong shape: "
            + ", ".join(f"{k} {list(state[k].shape)} vs {list(expected[k])}" for k in wrong_shape[:SHOWN_KEYS])
        )
    raise CheckpointError("; ".join(parts) + "; is this the right checkpoint for the model?")


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Strictly load the weights at `path` into `model` (built on `meta` or a real device)."""
    state = read_state_dict(path)
    check_state_dict(model, state, source=str(path))
    on_meta = any(p.is_meta for p in model.parameters())
    # On `meta` the file's tensors are adopted as they are (no second full copy, dtype kept).
    model.load_state_dict(state, strict=True, assign=on_meta)
    return model


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 24) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints are several GB); remembered per process for a
    file of the same path, size and modification time (interactive generation asks again and again)."""
    stat = os.stat(path)
    return _file_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, chunk_bytes)


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int, chunk_bytes: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()
