"""`backend: auto` / `dtype: auto`: the choice follows the CPU's flags, and the AVX2 path can be forced for tests."""

from __future__ import annotations

import pytest

from mathgenie.generation import hardware


@pytest.fixture
def flags(monkeypatch):
    """Pretend the CPU has exactly the given flags."""
    def use(*names):
        monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(names))
        monkeypatch.setattr(hardware, "cuda_available", lambda: False)
        monkeypatch.setattr(hardware, "vllm_installed", lambda: True)
    return use


def test_bf16_only_where_the_cpu_computes_it(flags):
    flags("avx2", "avx512f", "avx512_bf16")
    assert hardware.pick_dtype("auto", on_gpu=False).value == "bfloat16"
    flags("avx2", "avx512f")
    choice = hardware.pick_dtype("auto", on_gpu=False)
    assert choice.value == "float32" and "emulated" in choice.reason
    flags("avx2", "amx_bf16")
    assert hardware.pick_dtype("auto", on_gpu=False).value == "bfloat16"
    assert hardware.pick_dtype("auto", on_gpu=True).value == "auto"
    assert hardware.pick_dtype("float16", on_gpu=False) == hardware.Choice("float16", "as configured")


def test_vllm_wherever_it_has_kernels_else_transformers(flags, monkeypatch):
    flags("avx2")
    assert hardware.pick_backend("auto") == hardware.Choice("vllm", "vLLM's AVX2 CPU kernels with continuous batching")
    flags("avx2", "avx512f")
    assert "AVX-512" in hardware.pick_backend("auto").reason
    flags("sse4_2")
    assert hardware.pick_backend("auto").value == "transformers"
    assert hardware.pick_backend("transformers") == hardware.Choice("transformers", "as configured")
    monkeypatch.setattr(hardware, "vllm_installed", lambda: False)
    flags_ = hardware.pick_backend("auto")
    assert flags_ == hardware.Choice("transformers", "vLLM is not installed")


def test_the_avx2_path_can_be_forced_on_an_avx512_machine(monkeypatch):
    hardware.cpu_flags.cache_clear()
    monkeypatch.setenv("MATHGENIE_CPU_ISA", "avx2")
    try:
        flags = hardware.cpu_flags()
        assert not any(f.startswith(("avx512", "amx")) for f in flags)
        assert hardware.pick_dtype("auto", on_gpu=False).value == "float32"
        assert "avx512" not in hardware.describe_cpu().split("(")[-1]
    finally:
        hardware.cpu_flags.cache_clear()


def test_describe_cpu_names_model_flags_and_cores():
    text = hardware.describe_cpu()
    assert text.endswith("cores") and "(" in text
