"""What the machine at hand runs fastest: the engine backend and dtype that ``auto`` stands for.

CPUs differ more than the word "CPU" says. bfloat16 is native only with AVX512_BF16 or AMX (recent Xeons, AMD Zen 4+);
elsewhere PyTorch emulates it and a 135M model decodes 2.7x slower in bf16 than in float32 (measured on an AVX2 EPYC).
vLLM's CPU build is written for AVX-512: with AVX2 only it falls back to kernels that decoded 11-17 tok/s where
transformers in float32 did 38 tok/s on one thread. Every choice is logged in one line with its reason.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)

# The flags that decide the choices below, in the order `describe_cpu` names them.
_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where it cannot be read). ``MATHGENIE_CPU_ISA=avx2``
    hides everything above AVX2, so the AVX2 path can be exercised (and benchmarked) on an AVX-512 machine."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        line = ""
    flags = frozenset(line.partition(":")[2].split())
    if os.environ.get("MATHGENIE_CPU_ISA", "").lower() == "avx2":
        flags = frozenset(f for f in flags if not f.startswith(("avx512", "amx")))
    return flags


def cpu_has_native_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_has_avx512() -> bool:
    return "avx512f" in cpu_flags()


def describe_cpu() -> str:
    """``"AMD EPYC (avx2 avx512f avx512_bf16), 2 cores"``: what every figure of ours is measured on."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.partition(":")[2].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    present = " ".join(f for f in _FLAGS if f in cpu_flags()) or "no AVX2"
    return f"{model} ({present}), {os.cpu_count()} cores"


def cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


@dataclass(frozen=True)
class Choice:
    value: str
    reason: str


def pick_dtype(requested: str, *, on_gpu: bool) -> Choice:
    """``auto`` on CPU: bfloat16 where the CPU computes it natively, else float32; on GPU the checkpoint's dtype."""
    if requested != "auto":
        return Choice(requested, "as configured")
    if on_gpu:
        return Choice("auto", "GPU: the checkpoint's dtype")
    if cpu_has_native_bf16():
        return Choice("bfloat16", "the CPU has native bf16 (avx512_bf16/amx_bf16)")
    return Choice("float32", "the CPU has no native bf16, so bf16 would be emulated (~2.7x slower)")


def pick_backend(requested: str, *, model_params: int | None = None) -> Choice:
    """``auto``: vLLM on a GPU; on a CPU vLLM only where its AVX-512 kernels apply and the model is big enough to repay
    its start-up (~60 s on 2 cores), else transformers."""
    if requested != "auto":
        return Choice(requested, "as configured")
    if importlib.util.find_spec("vllm") is None:
        return Choice("transformers", "vLLM is not installed")
    if cuda_available():
        return Choice("vllm", "a CUDA GPU is available")
    if not cpu_has_avx512():
        return Choice("transformers", "CPU without AVX-512: vLLM's CPU kernels are slower than transformers here")
    return Choice("vllm", "CPU with AVX-512: vLLM's CPU kernels apply")


def log_choice(backend: Choice, dtype: Choice) -> None:
    logger.info("engine: %s (%s), dtype %s (%s) on %s", backend.value, backend.reason, dtype.value, dtype.reason,
                "a CUDA GPU" if cuda_available() else describe_cpu())
