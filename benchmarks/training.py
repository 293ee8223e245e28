"""SFT throughput: mathgenie's MathGenieLM recipe vs plain TRL `SFTTrainer` with packing, measured in the same run.

    python benchmarks/training.py                           # CUDA: Qwen2.5-0.5B and 1.5B shapes, bf16
    python benchmarks/training.py --shapes 0.5b --seq-len 4096 --compile
    python benchmarks/training.py --device cpu --shape tiny # smoke check of the whole path on CPU

Models are random-init Qwen2.5 architectures; data are synthetic LCE-like examples (lengths log-normal around 450
tokens, the first 30% of each masked like a prompt), pre-tokenized, the same for every row of the table. Each
configuration runs in its own subprocess (clean memory and compile caches), for ``--warmup`` untimed then
``--steps`` timed optimizer steps. Tokens are the non-pad tokens TRL counts (``num_tokens``).

MFU = (6·P + 12·L·h·S) · tokens/s / peak, P = parameters (tied embeddings once), L layers, h hidden size, S the
packed row length (the anchor's convention: attention counted over the whole row), peak = dense bf16 FLOP/s of the
device, chosen by name (``--peak-tflops`` overrides; none on CPU).

Rows:
- ``trl-default``: `SFTTrainer(model, SFTConfig(packing=True, max_length=S, bf16=True))`, TRL 1.16 defaults otherwise:
  BFD packing flattened padding-free, gradient checkpointing on, fused AdamW, fp32 weights + bf16 autocast.
- ``trl-no-ckpt`` (``--ablate``): the same without gradient checkpointing.
- ``mathgenie``: `mathgenie.training.recipes.make_trainer` with `MathGenieLMConfig`: same packing, precision and
  optimizer; SDPA gets one block-diagonal mask per packed row instead of one over the flattened batch, flash-attn
  (when installed) the varlen kernel; no gradient checkpointing; liger-kernel layers when installed on CUDA;
  ``--compile`` adds torch.compile (static row shapes); ``--ablate`` adds it with gradient checkpointing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

SHAPES = {
    # Qwen2.5 configs (hidden, layers, heads, kv heads, intermediate, vocab)
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936),
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960, vocab_size=151936),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=512, vocab_size=8192),
}
# Rows per device per step and row length: the anchor's settings on an 80 GB H100 (peers-and-anchors.md §3b).
DEFAULT_BATCH = {"0.5b": 8, "1.5b": 4, "tiny": 2}
DEFAULT_SEQ = {"0.5b": 2048, "1.5b": 2048, "tiny": 512}
# Dense bf16 tensor-core peak (FLOP/s) by device-name substring, most specific first.
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
             ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12)]
GOALS = {"speedup_0.5b": 2.5, "mfu_1.5b": 0.40}


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    return next((flops for key, flops in PEAK_BF16 if key in device_name), None)


def synthetic_dataset(vocab_size: int, total_tokens: int, max_len: int, seed: int = 0):
    import datasets
    import numpy as np

    rng = np.random.default_rng(seed)
    rows, n = {"input_ids": [], "labels": []}, 0
    while n < total_tokens:
        length = int(np.clip(rng.lognormal(math.log(450), 0.6), 48, max_len))
        ids = rng.integers(16, vocab_size, size=length).tolist()
        prompt = int(0.3 * length)
        rows["input_ids"].append(ids)
        rows["labels"].append([-100] * prompt + ids[prompt:])
        n += length
    return datasets.Dataset.from_dict(rows)


def minimal_tokenizer():
    """Pad/eos only: the data are pre-tokenized, the trainer needs the tokenizer for its special ids."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")),
                                   pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def run_worker(spec: dict) -> dict:
    """One configuration: build, train warmup + steps, time the last ``steps``."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config, TrainerCallback

    cuda = spec["device"] == "cuda"
    torch.manual_seed(0)
    shape = SHAPES[spec["shape"]]
    attn = spec["attn"]
    if attn == "auto":
        from mathgenie.training.packing import resolve_attn_implementation

        attn = resolve_attn_implementation("auto") if cuda else "sdpa"
    config = Qwen2Config(**shape, max_position_embeddings=max(32768, spec["seq_len"]), tie_word_embeddings=True)
    with torch.device("cuda" if cuda else "cpu"):
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())  # unique tensors: tied embeddings counted once
    steps, warmup, batch, seq = spec["steps"], spec["warmup"], spec["batch"], spec["seq_len"]
    data = synthetic_dataset(shape["vocab_size"], int((steps + warmup + 2) * batch * seq * 1.1), seq)
    tokenizer = minimal_tokenizer()
    common = dict(output_dir=spec["output_dir"], max_length=seq, per_device_train_batch_size=batch,
                  gradient_accumulation_steps=1, max_steps=steps + warmup, learning_rate=2e-5, logging_steps=1,
                  save_strategy="no", report_to="none", disable_tqdm=True, seed=0, bf16=cuda, use_cpu=not cuda,
                  lr_scheduler_type="constant", warmup_steps=0, packing=True)

    if spec["mode"].startswith("trl"):
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(gradient_checkpointing=spec["grad_ckpt"], **common)
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        layout = "flattened"
    else:
        from mathgenie.training.config import MathGenieLMConfig
        from mathgenie.training.packing import is_varlen
        from mathgenie.training.recipes import make_trainer

        liger = spec["liger"] == "on" or (spec["liger"] == "auto" and cuda and _importable("liger_kernel"))
        args = MathGenieLMConfig(model_name_or_path="random-init", dataset_name="synthetic", global_batch_size=None,
                                 gradient_checkpointing=spec["grad_ckpt"], use_liger_kernel=liger,
                                 torch_compile=spec["compile"], model_dtype="float32", **common)
        trainer = make_trainer(args, model, tokenizer, data)
        layout = "varlen" if is_varlen(attn) else "rows"
        spec["liger"] = "on" if liger else "off"

    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    trainer.add_callback(StepTimer())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    logs = [h for h in trainer.state.log_history if "num_tokens" in h]
    tokens = logs[-1]["num_tokens"] - logs[warmup - 1]["num_tokens"] if warmup else logs[-1]["num_tokens"]
    seconds = sum(times[warmup:])
    tok_s = tokens / seconds
    flops_per_token = 6 * n_params + 12 * shape["num_hidden_layers"] * shape["hidden_size"] * seq
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        **spec, "attn": attn, "layout": layout, "params": n_params, "tokens": tokens, "seconds": seconds,
        "tok_s": tok_s, "achieved_flops": flops_per_token * tok_s, "first_loss": losses[0], "last_loss": losses[-1],
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "grad_ckpt": trainer.args.gradient_checkpointing,
    }


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def run_in_subprocess(spec: dict) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-3000:]
        return {**spec, "error": tail.strip().splitlines()[-1] if tail.strip() else f"exit {proc.returncode}",
                "stderr": tail}
    return json.loads(lines[-1][len("RESULT "):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda if available")
    parser.add_argument("--shapes", "--shape", default=None, help="comma list of 0.5b,1.5b,tiny (cpu: tiny)")
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps (cuda 20, cpu 4)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (cuda 5, cpu 2)")
    parser.add_argument("--seq-len", type=int, default=None, help="packed row length (default per shape)")
    parser.add_argument("--batch", type=int, default=None, help="rows per step (default per shape)")
    parser.add_argument("--attn", default="auto", help="attention for both rows: auto | sdpa | flash_attention_2 ...")
    parser.add_argument("--compile", action="store_true", help="add a mathgenie row with torch.compile")
    parser.add_argument("--liger", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--ablate", action="store_true", help="add plain TRL without gradient checkpointing and "
                        "mathgenie with it, to split the speed-up between the two")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak (dense bf16) for MFU")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print("RESULT " + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return 0

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU")
    shapes = (args.shapes or ("0.5b,1.5b" if device == "cuda" else "tiny")).split(",")
    steps = args.steps or (20 if device == "cuda" else 4)
    warmup = args.warmup if args.warmup is not None else (5 if device == "cuda" else 2)
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({os.cpu_count()} cores visible)"
    peak = peak_flops(name, args.peak_tflops) if device == "cuda" else (args.peak_tflops or 0) * 1e12 or None
    import transformers
    import trl

    print(f"device: {name}; peak {'%.0f TFLOP/s' % (peak / 1e12) if peak else 'unknown (no MFU)'}; torch "
          f"{torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}; "
          f"liger-kernel {'yes' if _importable('liger_kernel') else 'no'}, flash-attn "
          f"{'yes' if _importable('flash_attn') else 'no'}")

    results = []
    with tempfile.TemporaryDirectory(prefix="mathgenie-bench-") as tmp:
        for shape in shapes:
            base = {"device": device, "shape": shape, "steps": steps, "warmup": warmup, "attn": args.attn,
                    "seq_len": args.seq_len or DEFAULT_SEQ[shape], "batch": args.batch or DEFAULT_BATCH[shape],
                    "output_dir": tmp, "liger": "off", "compile": False, "grad_ckpt": True}
            specs = [{**base, "mode": "trl-default"},
                     {**base, "mode": "mathgenie", "liger": args.liger, "grad_ckpt": False}]
            if args.ablate:
                specs.insert(1, {**base, "mode": "trl-no-ckpt", "grad_ckpt": False})
                specs.append({**base, "mode": "mathgenie", "liger": args.liger, "grad_ckpt": True})
            if args.compile:
                specs.append({**base, "mode": "mathgenie", "liger": args.liger, "grad_ckpt": False, "compile": True})
            for spec in specs:
                result = run_in_subprocess(spec)
                results.append(result)
                print_row(result, peak)

    print()
    for shape in shapes:
        rows = [r for r in results if r["shape"] == shape and "error" not in r]
        base = next((r for r in rows if r["mode"] == "trl-default"), None)
        best = max((r for r in rows if r["mode"] == "mathgenie"), key=lambda r: r["tok_s"], default=None)
        if base and best:
            line = f"{shape}: mathgenie {best['tok_s'] / base['tok_s']:.2f}x plain TRL"
            if peak:
                line += f"; MFU {best['achieved_flops'] / peak:.1%} vs {base['achieved_flops'] / peak:.1%}"
            if device == "cuda" and shape == "0.5b":
                line += f" (goal >= {GOALS['speedup_0.5b']}x)"
            if device == "cuda" and shape == "1.5b":
                line += f" (goal MFU >= {GOALS['mfu_1.5b']:.0%})"
            print(line)
    if device == "cpu":
        print("CPU figures are a smoke check of the code paths, not a measure of the GPU goals.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "peak_flops": peak, "results": results}, f, indent=2)
    return 1 if any("error" in r for r in results) else 0


def print_row(r: dict, peak: float | None) -> None:
    if not hasattr(print_row, "header"):
        print_row.header = True
        print(f"{'shape':6} {'mode':12} {'attn':18} {'layout':9} {'ckpt':4} {'liger':5} {'compile':7} {'B x S':>10} "
              f"{'tok/s':>9} {'MFU':>6} {'mem GiB':>8} {'loss first->last':>17}")
    if "error" in r:
        print(f"{r['shape']:6} {r['mode']:12} FAILED: {r['error']}")
        return
    mfu = f"{r['achieved_flops'] / peak:.1%}" if peak else "n/a"
    mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "-"
    bxs = f"{r['batch']} x {r['seq_len']}"
    print(f"{r['shape']:6} {r['mode']:12} {r['attn']:18} {r['layout']:9} {'on' if r['grad_ckpt'] else 'off':4} "
          f"{r['liger']:5} {'on' if r['compile'] else 'off':7} {bxs:>10} "
          f"{r['tok_s']:9.0f} {mfu:>6} {mem:>8} {r['first_loss']:8.3f}->{r['last_loss']:.3f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
