"""`mathgenie demo`: the README's first command, run as a user would, with no network at all."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The demo's own config, made smaller so the test stays short (the full demo is timed in the report, not here).
SMALLER = ["seed.limit_per_source=1", "augment.rounds=1", "augment.max_tokens=96", "back_translate.max_tokens=128",
           "back_translate.require_question_cue=false", "solve.max_tokens=96", "solve.max_blocks=2",
           "verify.consistency=none", "verify.max_tokens=96", "verify.max_blocks=2"]


@pytest.mark.slow
@pytest.mark.engine
def test_demo_runs_offline_pushes_every_stage_and_loads_the_verified_set_back(tmp_path, smollm2_dir):
    out = tmp_path / "demo"
    demo = [sys.executable, "-m", "mathgenie.cli", "demo", "--output-dir", str(out), "--backend", "transformers",
            *SMALLER]
    if shutil.which("unshare") and shutil.which("ip") and subprocess.run(
            ["unshare", "-n", "true"], capture_output=True).returncode == 0:
        # a network namespace with only loopback: any attempt to reach the internet fails
        cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *demo]
    else:
        cmd = demo
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stdout = proc.stdout
    assert re.search(r"\[demo\] local Hub at http://127\.0\.0\.1:\d+", stdout)
    funnel = json.loads((out / "funnel.json").read_text())["stages"]
    assert [s["stage"] for s in funnel] == ["seed", "augment", "back_translate", "solve", "verify", "decontaminate"]
    verified_rows = funnel[-1]["rows_out"]
    m = re.search(r"\[demo\] org/mathgenie-verified@(run-[0-9a-f]+): (\d+) rows", stdout)
    assert m is not None, stdout[-2000:]
    assert int(m.group(2)) == verified_rows
    assert "| verify |" in stdout and "| decontaminate |" in stdout and "[demo] done in" in stdout
