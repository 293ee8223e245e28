"""benchmarks/generation.py: the table's ratios and goals, and one real run at a tiny size (transformers only)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "generation.py"


def _load_generation():
    spec = importlib.util.spec_from_file_location("bench_generation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_table_compares_each_row_with_the_raw_row_of_its_own_engine():
    gen = _load_generation()
    rows = [gen.Row("vllm/bfloat16", "raw vllm.LLM.generate", 4, 400, 2.0, start_s=61.0),
            gen.Row("vllm/bfloat16", "VLLMEngine.generate", 4, 380, 2.0, "raw vllm.LLM.generate", 0.9),
            gen.Row("transformers/float32", "raw vllm.LLM.generate", 4, 100, 1.0),  # same name, other engine
            gen.Row("transformers/float32", "solve stage", 4, 70, 1.0, "raw vllm.LLM.generate", 0.8)]
    lines = gen.render_table(rows).splitlines()[2:]
    assert lines[0].startswith("| vllm/bfloat16 | 61 | raw vllm.LLM.generate |") and "| raw |" in lines[0]
    assert "| 190.0 | 0.95x | >= 0.9 met |" in lines[1]
    assert "| 70.0 | 0.70x | >= 0.8 MISSED |" in lines[3]  # against 100 tok/s of its own group, not vLLM's 200


@pytest.mark.slow
@pytest.mark.engine
def test_tiny_run_prints_one_table_with_engine_and_stage_rows(smollm2_dir):
    cmd = [sys.executable, str(SCRIPT), "--num-prompts", "2", "--max-tokens", "8", "--backends", "transformers",
           "--dtypes", "float32"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "CPU: " in out and "torch " in out and "auto: backend " in out
    table = [line for line in out.splitlines() if line.startswith("| transformers/float32 |")]
    names = [line.split(" | ")[2] for line in table]
    assert names[:3] == ["raw model.generate (transformers)", "TransformersEngine.generate",
                         "TransformersEngine submit/poll"]
    assert {"augment stage (K=1, 1 prompt/solution)", "raw generate: augment prompts", "back_translate stage",
            "raw generate: back-translate prompts", "solve stage (generate + execute loop)",
            "raw generate: solve first-step prompts"} <= set(names)
    for line in table:
        tokens = int(line.split(" | ")[4].replace(",", ""))
        assert tokens > 0, line
    assert table[0].split(" | ")[1].strip() != ""  # the engine's start-up time, on the group's first row
