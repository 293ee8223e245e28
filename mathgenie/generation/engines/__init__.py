"""The three `Engine` implementations: vLLM offline (default), transformers ``generate`` (fallback), and any
OpenAI-compatible HTTP server. Load one with `load_engine` (the model files come from
`mathgenie.generation.models.resolve`; this package imports models, never the other way round).

Semantics every engine keeps, so stages do not care which one runs:

- ``n`` completions per prompt, in prompt order. Sample ``i`` of a request with ``seed=s`` is the completion of a
  request with ``n=1, seed=s+i`` (vLLM's own rule for ``n>1``), so results do not depend on how requests are grouped.
- ``finish_reason`` is ``"stop"`` (EOS or a stop string) or ``"length"`` (``max_tokens`` reached); ``stop_reason`` is
  the stop string that matched, or None. The text never contains the EOS token; it ends with the stop string iff
  ``include_stop_str_in_output``.
- ``prompt_tokens``/``completion_tokens`` count tokens (the EOS token counts as generated).

The engine classes import their heavy dependencies lazily: importing this package imports neither vLLM nor torch.
"""

from __future__ import annotations

import logging

from mathgenie.generation.engine import Engine, ModelSpec

__all__ = ["BACKENDS", "cut_at_stop", "load_engine", "render_chat"]

logger = logging.getLogger(__name__)
BACKENDS = ("auto", "vllm", "transformers", "openai")


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str], include: bool) -> tuple[str, str | None]:
    """Cut ``text`` at the earliest occurrence of any stop string. Returns ``(text, matched stop or None)``; the stop
    string is kept iff ``include``. Among stops starting at the same offset the longest wins."""
    best: tuple[int, int, str] | None = None
    for s in stop:
        if not s:
            continue
        i = text.find(s)
        if i >= 0 and (best is None or (i, -len(s)) < (best[0], -best[1])):
            best = (i, len(s), s)
    if best is None:
        return text, None
    i, length, s = best
    return text[: i + length] if include else text[:i], s


def render_chat(tokenizer, messages: list[dict]) -> str:
    """``messages`` rendered with the tokenizer's chat template, generation prompt added."""
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "the tokenizer")
        raise ValueError(
            f"{name} has no chat template; render prompts yourself and call generate(), or pass a tokenizer with a "
            "template (ModelSpec.tokenizer), e.g. one saved with mathgenie.schema.CHAT_TEMPLATE for LCE models"
        )
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def load_engine(spec: ModelSpec | str, backend: str = "auto", **kwargs) -> Engine:
    """Load an engine for ``spec``. ``backend="auto"`` and ``spec.dtype="auto"`` pick what runs fastest on this machine
    (`mathgenie.generation.hardware`, logged in one line); ``"openai"`` talks to a running OpenAI-compatible server
    (pass ``base_url``). Extra keyword arguments go to the engine's constructor."""
    from mathgenie.generation import hardware

    if isinstance(spec, str):
        spec = ModelSpec(spec)
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; expected one of {BACKENDS}")
    chosen = hardware.pick_backend(backend)
    if chosen.value == "openai":
        from mathgenie.generation.engines.openai_engine import OpenAIEngine

        return OpenAIEngine(spec, **kwargs)
    dtype = hardware.pick_dtype(spec.dtype, on_gpu=hardware.cuda_available())
    hardware.log_choice(chosen, dtype)
    if dtype.value != spec.dtype:
        kwargs.setdefault("dtype", dtype.value)  # the engine's load dtype; spec (and so cache keys) keep "auto"
    if chosen.value == "vllm":
        from mathgenie.generation.engines.vllm_engine import VLLMEngine

        return VLLMEngine(spec, **kwargs)
    from mathgenie.generation.engines.transformers_engine import TransformersEngine

    return TransformersEngine(spec, **kwargs)
