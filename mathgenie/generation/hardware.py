"""What the machine at hand runs fastest: the engine backend and dtype that ``auto`` stands for.

CPUs differ more than the word "CPU" says. bfloat16 is native only with AVX512_BF16 or AMX (recent Xeons, AMD Zen 4+);
elsewhere PyTorch and vLLM emulate it, and a 135M model decodes 2.4-2.7x slower in bf16 than in float32 (vLLM with its
AVX2 kernels: 32 vs 78 tok/s on 2 cores). So ``dtype: auto`` means bf16 only where the CPU has it. Every choice is
logged in one line with its reason and the CPU's flags.
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


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


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


def pick_backend(requested: str) -> Choice:
    """``auto``: vLLM wherever it is installed and has kernels for the device (a CUDA GPU, or a CPU with AVX2 or
    AVX-512); else transformers. Measured on 2 cores, float32 with AVX2 kernels, a batch of 16: vLLM in-process
    114 tok/s (17 s start), transformers 67 tok/s (6 s start); and vLLM batches continuously, which the LCE loop
    needs."""
    if requested != "auto":
        return Choice(requested, "as configured")
    if not vllm_installed():
        return Choice("transformers", "vLLM is not installed")
    if cuda_available():
        return Choice("vllm", "a CUDA GPU is available")
    if not {"avx2", "avx512f"} & cpu_flags():
        return Choice("transformers", "vLLM's CPU build needs AVX2 or AVX-512, which this CPU lacks")
    kernels = "AVX-512" if cpu_has_avx512() else "AVX2"
    return Choice("vllm", f"vLLM's {kernels} CPU kernels with continuous batching")


def log_choice(backend: Choice, dtype: Choice) -> None:
    logger.info("engine: %s (%s), dtype %s (%s) on %s", backend.value, backend.reason, dtype.value, dtype.reason,
                "a CUDA GPU" if cuda_available() else describe_cpu())
