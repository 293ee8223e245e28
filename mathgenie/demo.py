"""``mathgenie demo``: the whole pipeline offline, on a laptop, in minutes.

    mathgenie demo                       # configs/demo.yaml: bundled seed sample, SmolLM2-135M-Instruct, small K and n
    mathgenie demo --output-dir /tmp/d   # keep the outputs somewhere else
    mathgenie demo --backend transformers

It starts the local Hub (a temporary directory, or ``--hub-root``), runs ``mathgenie run`` on the demo config in a
subprocess whose ``HF_ENDPOINT`` points at that Hub (huggingface_hub reads it at import, so it must be set before
the import: a fresh process is the reliable way), pushes every stage, loads ``org/mathgenie-verified`` back in
another fresh process, and prints the funnel. A 135M model verifies few rows; the funnel says how many.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# configs/demo.yaml, shipped inside the package (a link to the repository's file; wheels copy it), so an install
# without the repository has it too.
DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="run the whole pipeline offline on a tiny model and a local Hub",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="demo config (default: configs/demo.yaml, shipped with mathgenie)")
    p.add_argument("--output-dir", help="where the run goes (default: the config's output_dir)")
    p.add_argument("--hub-root", help="directory the local Hub serves (default: a temporary directory)")
    p.add_argument("--backend", choices=["auto", "vllm", "transformers"], help="engine backend (default: auto)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, as for `mathgenie run`")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    import yaml

    from mathgenie.hub.server import serve_in_thread

    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mathgenie-demo-") as tmp_dir:
        tmp = Path(tmp_dir)
        config = Path(args.config) if args.config else DEMO_CONFIG
        overrides = [*args.overrides, "push.enabled=true"] + ([f"model.backend={args.backend}"] if args.backend else [])
        checked = _checked(config, overrides)  # before the Hub starts: a misspelled key stops the demo here
        output_dir = args.output_dir or checked.output_dir
        overrides.append(f"output_dir={output_dir}")
        token = "hf_demo_" + secrets.token_hex(16)
        hub = serve_in_thread(Path(args.hub_root) if args.hub_root else tmp / "hub", token=token)
        print(f"[demo] local Hub at {hub.url} (serving {hub.root})", flush=True)
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": token,
               "HF_HOME": str(tmp / "hf_home"), "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            env.pop(var, None)
        try:
            cmd = [sys.executable, "-m", "mathgenie.cli", "run", str(config), *overrides]
            print(f"[demo] {' '.join(cmd[1:])}", flush=True)
            rc = subprocess.call(cmd, env=env)
            if rc != 0:
                print(f"[demo] the pipeline failed (exit {rc})")
                return rc
            funnel = json.loads((Path(output_dir) / "funnel.json").read_text())
            print("[demo] loading org/mathgenie-verified back from the Hub in a fresh process", flush=True)
            rc = subprocess.call([sys.executable, "-c", _LOAD_BACK, yaml.safe_dump(_repo(checked))],
                                 env=env)
            if rc != 0:
                return rc
        finally:
            hub.stop()
    _print_funnel(funnel["stages"], time.monotonic() - start, checked.model.backend)
    return 0


def _checked(config: Path, overrides: list[str]):
    """The demo's config, checked before anything starts: a misspelled key names the key and the file."""
    from mathgenie.config import ConfigError
    from mathgenie.generation.config import load_config

    try:
        return load_config(config, overrides)
    except ConfigError as e:
        raise SystemExit(f"mathgenie demo: {e}") from None


def _repo(cfg) -> dict:
    """The verified dataset's repo and tag (neither depends on output_dir, the one override added after the check)."""
    from mathgenie.generation.pipeline import stage_hashes
    from mathgenie.generation.publish import pushed_names, run_tag

    return {"repo_id": f"{cfg.push.org}/{pushed_names(cfg)['decontaminate']}", "tag": run_tag(cfg, stage_hashes(cfg))}


_LOAD_BACK = """
import sys, yaml
from datasets import load_dataset
from mathgenie.schema import blocks_to_plain_text
repo = yaml.safe_load(sys.argv[1])
try:
    ds = load_dataset(repo["repo_id"], revision=repo["tag"], split="train")
except ValueError as e:  # `datasets` cannot load a split whose parquet has 0 rows
    if "corresponds to no data" not in str(e):
        raise
    from huggingface_hub import HfApi
    files = HfApi().list_repo_files(repo["repo_id"], repo_type="dataset", revision=repo["tag"])
    print(f"[demo] {repo['repo_id']}@{repo['tag']}: 0 rows verified this run; the repo holds {sorted(files)}")
    sys.exit(0)
print(f"[demo] {repo['repo_id']}@{repo['tag']}: {ds.num_rows} rows, columns {ds.column_names}")
for row in ds.select(range(min(1, ds.num_rows))):
    print("[demo] a verified row:")
    print("  question:", row["question"][:300])
    print("  answer:", row["answer"], "| verdict:", row["verdict"], "| agreement:", row["agreement"])
    print("  solution:", blocks_to_plain_text(row["blocks"])[:600].replace("\\n", "\\n    "))
"""


def _print_funnel(stages: list[dict], seconds: float, backend: str) -> None:
    from mathgenie.generation import hardware
    from mathgenie.generation.funnel import StageStats, funnel_table

    stats = [StageStats.from_dict(s) for s in stages]
    print("\n[demo] funnel")
    print(funnel_table(stats))
    generating = [s for s in stats if s.generated_tokens]
    tokens, busy = sum(s.generated_tokens for s in generating), sum(s.seconds for s in generating)
    choice = hardware.pick_backend(backend)
    dtype = hardware.pick_dtype("auto", on_gpu=hardware.cuda_available())
    print(f"\n[demo] engine: {choice.value} ({choice.reason}), dtype {dtype.value}, on {hardware.describe_cpu()}")
    print(f"[demo] {tokens} tokens generated in {busy:.1f} s of stage time: {tokens / busy if busy else 0:.0f} tok/s")
    print(f"[demo] done in {seconds:.0f} s ({seconds / 60:.1f} min)")
