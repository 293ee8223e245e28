"""The three `Engine` implementations: vLLM offline (default), transformers ``generate`` (fallback), and any
OpenAI-compatible HTTP server. Load one with `mathgenie.generation.models.load_engine`.

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

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mathgenie.generation.engines.openai_engine import OpenAIEngine
    from mathgenie.generation.engines.transformers_engine import TransformersEngine
    from mathgenie.generation.engines.vllm_engine import VLLMEngine

__all__ = ["OpenAIEngine", "TransformersEngine", "VLLMEngine", "cut_at_stop", "render_chat"]

_LAZY = {
    "VLLMEngine": "mathgenie.generation.engines.vllm_engine",
    "TransformersEngine": "mathgenie.generation.engines.transformers_engine",
    "OpenAIEngine": "mathgenie.generation.engines.openai_engine",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


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
