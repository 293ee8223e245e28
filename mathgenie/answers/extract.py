"""Final-answer extraction: ``\\boxed{}``/``\\fbox{}``, ``The answer is: ...``, GSM8K ``#### ...``, LCE solutions."""

from __future__ import annotations

import re
from typing import Sequence

_BOX_RE = re.compile(r"\\(?:boxed|fbox)")
_ANSWER_IS_RE = re.compile(r"[Tt]he (?:final )?answer is\s*:?\s*")
_ERROR_LINE_RE = re.compile(r"^(?:Traceback \(most recent call last\)|[A-Za-z_.]*(?:Error|Exception|Interrupt)\b.*)")
_THOUSANDS_RE = re.compile(r"^[-+]?\$?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_LCE_TOKENS = ("<|text|>", "<|code|>", "<|execution|>")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}`` (nested braces balanced), or of a ``\\boxed 5`` written
    without braces (up to ``$``). None if there is none, if the last one is cut off, or if it is empty."""
    if not text:
        return None
    starts = [m for m in _BOX_RE.finditer(text)]
    if not starts:
        return None
    rest = text[starts[-1].end():]
    if rest[:1] == " " and not rest.lstrip().startswith("{"):  # "\boxed 5$" (Hendrycks' `last_boxed_only_string`)
        content = rest[1:].split("$")[0].strip()
        return content or None
    rest = rest.lstrip()
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{" and (i == 0 or rest[i - 1] != "\\"):
            depth += 1
        elif ch == "}" and rest[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                content = rest[1:i].strip()
                return content or None
    return None  # unbalanced: a generation cut inside the box


def _answer_is(text: str) -> str | None:
    matches = list(_ANSWER_IS_RE.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end():].lstrip()
    if rest.startswith("$"):  # "The final answer is $5$. I hope it is correct." (Minerva)
        end = rest.find("$", 1)
        if end > 0:
            return rest[1:end].strip() or None
    line = rest.split("\n", 1)[0].strip()
    line = re.split(r"\.\s+(?=[A-Z])", line, maxsplit=1)[0]  # cut the next sentence
    line = line.strip().removesuffix(".").strip()
    return line or None


def _gsm8k(text: str) -> str | None:
    idx = text.rfind("####")
    if idx < 0:
        return None
    answer = text[idx + 4:].strip().split("\n", 1)[0].strip()
    answer = re.sub(r"\.$", "", answer).strip()
    if _THOUSANDS_RE.match(answer):
        answer = answer.replace(",", "")
    return answer or None


def extract_answer(text: str | None) -> str | None:
    """The final answer written in a solution, or None.

    In order: a LCE solution (rendered with ``<|text|>``/``<|code|>``/``<|execution|>`` blocks) goes to
    `extract_lce_answer`; then the last ``\\boxed{}``/``\\fbox{}``; then the text after the last ``The answer is:``
    (MetaMath) up to the end of its line or sentence; then the text after the last GSM8K ``####`` (thousands commas
    dropped). The answer is returned as written; `normalize_answer` and `is_equivalent` deal with notation.
    """
    if not text:
        return None
    if any(tok in text for tok in _LCE_TOKENS):
        blocks = _lce_blocks(text)
        if blocks is not None:
            return extract_lce_answer(blocks)
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    return _answer_is(text) or _gsm8k(text)


def _lce_blocks(text: str) -> list[dict] | None:
    from mathgenie.schema import LCEFormatError, parse_blocks, parse_conversation

    try:
        if re.match(r"\s*<\|(?:system|user|assistant)\|>", text):
            messages = [m for m in parse_conversation(text.strip()) if m["role"] == "assistant"]
            return messages[-1]["content"] if messages else None
        return parse_blocks(text.strip(), allow_partial=True)
    except LCEFormatError:
        return None


def extract_lce_answer(blocks: Sequence[dict]) -> str | None:
    """The final answer of a LCE solution (blocks ``{"type": "text" | "code" | "execution", "content": str}``).

    A ``\\boxed{}`` (or ``The answer is``) in the last text block wins; otherwise the last non-empty line of the final
    execution output, as in MathCoder's harness where the prediction is the last block. An execution that ended in an
    error (a traceback or ``XxxError: ...`` line) gives None.
    """
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") not in ("text", "code", "execution"):
            raise ValueError(
                f"blocks[{i}] = {block!r:.80} is not a LCE block; expected {{'type': 'text'|'code'|'execution', "
                "'content': str}} (see mathgenie.schema.parse_blocks)"
            )
    texts = [b for b in blocks if b["type"] == "text"]
    if texts:
        content = texts[-1].get("content") or ""
        found = last_boxed(content) or _answer_is(content)
        if found:
            return found
    executions = [b for b in blocks if b["type"] == "execution"]
    if executions:
        lines = [ln.strip() for ln in (executions[-1].get("content") or "").splitlines() if ln.strip()]
        if lines and not _ERROR_LINE_RE.match(lines[-1]) and not any(ln.startswith("Traceback") for ln in lines):
            return last_boxed(lines[-1]) or lines[-1]
    return None
