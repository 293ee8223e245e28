"""The rows of every stage and the LCE (language-code-execution) format of MathCoder/MathGenie.

Every stage reads the previous stage's rows and adds columns; lineage columns (seed id, round, prompt id, question
id, solution id, model, revision) are carried through so any verified row can be traced back to its seed.

LCE format (MathCoder ``src/inference.py``; no separators between tokens)::

    <|system|><|text|>{system}<|endofblock|><|endofmessage|>
    <|user|><|text|>{question}<|endofblock|><|endofmessage|>
    <|assistant|><|text|>...<|endofblock|><|code|>...<|endofblock|><|execution|>...<|endofblock|>...<|endofmessage|>

A message's content is a list of blocks ``{"type": "text" | "code" | "execution", "content": str}``.
"""

from __future__ import annotations

import re
from typing import Iterable

import datasets
from datasets import Features, List, Value

# ---------------------------------------------------------------------------------------------------------------------
# LCE special tokens and rendering
# ---------------------------------------------------------------------------------------------------------------------

SYSTEM, USER, ASSISTANT = "<|system|>", "<|user|>", "<|assistant|>"
END_OF_MESSAGE = "<|endofmessage|>"
TEXT, CODE, EXECUTION = "<|text|>", "<|code|>", "<|execution|>"
END_OF_BLOCK = "<|endofblock|>"
SPECIAL_TOKENS = [SYSTEM, USER, ASSISTANT, END_OF_MESSAGE, TEXT, CODE, EXECUTION, END_OF_BLOCK]

ROLES = ("system", "user", "assistant")
BLOCK_TYPES = ("text", "code", "execution")
_ROLE_TOKEN = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
_BLOCK_TOKEN = {"text": TEXT, "code": CODE, "execution": EXECUTION}
_TOKEN_BLOCK = {v: k for k, v in _BLOCK_TOKEN.items()}

# MathCoder's default system prompt is empty; ``--syspt`` uses this one.
DEFAULT_SYSTEM = ""
BOXED_SYSTEM = 'Below is a math problem. Please solve it step by step and put your answer in "\\boxed{}".'

# Chat template for the tokenizer (what `tokenizer.apply_chat_template` renders). Content may be a plain string (one
# text block) or a list of blocks. Equal to `render_conversation` for the same messages.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{% if message['content'] is string %}"
    "{{ '<|text|>' + message['content'] + '<|endofblock|>' }}"
    "{% else %}"
    "{% for block in message['content'] %}"
    "{{ '<|' + block['type'] + '|>' + block['content'] + '<|endofblock|>' }}"
    "{% endfor %}"
    "{% endif %}"
    "{{ '<|endofmessage|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


class LCEFormatError(ValueError):
    """Text that is not valid LCE (unknown token, unclosed block, text outside a block)."""


def _check_content(content: str) -> None:
    # A special token inside content would not survive the round trip through text.
    for tok in SPECIAL_TOKENS:
        if tok in content:
            raise LCEFormatError(f"block content contains the special token {tok}: {content[:60]!r}")


def block(type: str, content: str) -> dict:
    if type not in _BLOCK_TOKEN:
        raise LCEFormatError(f"unknown block type {type!r}; expected one of {BLOCK_TYPES}")
    _check_content(content)
    return {"type": type, "content": content}


def render_blocks(blocks: Iterable[dict]) -> str:
    """``[{type, content}, ...]`` → ``<|text|>...<|endofblock|><|code|>...<|endofblock|>...``."""
    parts = []
    for b in blocks:
        if b["type"] not in _BLOCK_TOKEN:
            raise LCEFormatError(f"unknown block type {b['type']!r}; expected one of {BLOCK_TYPES}")
        _check_content(b["content"])
        parts.append(_BLOCK_TOKEN[b["type"]] + b["content"] + END_OF_BLOCK)
    return "".join(parts)


_BLOCK_RE = re.compile(r"(<\|text\|>|<\|code\|>|<\|execution\|>)(.*?)<\|endofblock\|>", re.DOTALL)


def _strip_partial_token(text: str) -> str:
    """Drop a trailing proper prefix of a special token (``...<|endofbl``), left by a cut generation."""
    start = text.rfind("<|")
    if start >= 0 and any(tok.startswith(text[start:]) and tok != text[start:] for tok in SPECIAL_TOKENS):
        return text[:start]
    return text


def parse_blocks(text: str, *, allow_partial: bool = False) -> list[dict]:
    """Inverse of `render_blocks`. With ``allow_partial`` a trailing unclosed block (a generation cut at max tokens)
    is kept as is; otherwise it is an error."""
    blocks, pos = [], 0
    while pos < len(text):
        m = _BLOCK_RE.match(text, pos)
        if m is None:
            rest = text[pos:]
            if allow_partial and any(tok.startswith(rest) for tok in SPECIAL_TOKENS):
                break  # generation cut inside a special token (a model whose vocabulary splits it)
            opener = next((t for t in _TOKEN_BLOCK if rest.startswith(t)), None)
            if allow_partial and opener is not None and END_OF_BLOCK not in rest:
                content = _strip_partial_token(rest[len(opener):])
                if any(tok in content for tok in SPECIAL_TOKENS):
                    raise LCEFormatError(f"special token inside a partial block at offset {pos}: {rest[:60]!r}")
                blocks.append({"type": _TOKEN_BLOCK[opener], "content": content})
                break
            raise LCEFormatError(f"not an LCE block at offset {pos}: {rest[:60]!r}")
        content = m.group(2)
        if any(tok in content for tok in SPECIAL_TOKENS):
            raise LCEFormatError(f"special token inside a block at offset {pos}: {content[:60]!r}")
        blocks.append({"type": _TOKEN_BLOCK[m.group(1)], "content": content})
        pos = m.end()
    return blocks


def render_conversation(messages: Iterable[dict], *, add_generation_prompt: bool = False) -> str:
    """Messages ``[{role, content: str | [blocks]}]`` → the LCE string (same output as `CHAT_TEMPLATE`)."""
    parts = []
    for msg in messages:
        role = msg["role"]
        if role not in _ROLE_TOKEN:
            raise LCEFormatError(f"unknown role {role!r}; expected one of {ROLES}")
        content = msg["content"]
        blocks = [block("text", content)] if isinstance(content, str) else content
        parts.append(_ROLE_TOKEN[role] + render_blocks(blocks) + END_OF_MESSAGE)
    if add_generation_prompt:
        parts.append(ASSISTANT)
    return "".join(parts)


def parse_conversation(text: str) -> list[dict]:
    """Inverse of `render_conversation`: content always comes back as a list of blocks. A trailing ``<|assistant|>``
    (generation prompt) or an unfinished last message is returned as a message whose blocks may be partial."""
    messages, pos = [], 0
    role_re = re.compile(r"<\|(system|user|assistant)\|>")
    while pos < len(text):
        m = role_re.match(text, pos)
        if m is None:
            raise LCEFormatError(f"expected a role token at offset {pos}: {text[pos:pos + 60]!r}")
        end = text.find(END_OF_MESSAGE, m.end())
        body = text[m.end():] if end < 0 else text[m.end():end]
        messages.append({"role": m.group(1), "content": parse_blocks(body, allow_partial=end < 0)})
        pos = len(text) if end < 0 else end + len(END_OF_MESSAGE)
    return messages


def render_prompt(question: str, system: str = DEFAULT_SYSTEM) -> str:
    """The solver prompt of MathCoder's harness: system + user turn, then ``<|assistant|>``."""
    return render_conversation(
        [{"role": "system", "content": system}, {"role": "user", "content": question}], add_generation_prompt=True
    )


def blocks_to_plain_text(blocks: Iterable[dict]) -> str:
    """A readable flattening of a LCE solution (for the verification prompt and for back-translation inputs):
    code in fenced blocks, execution output in ```output fences."""
    out = []
    for b in blocks:
        if b["type"] == "text":
            out.append(b["content"].strip())
        elif b["type"] == "code":
            out.append("```python\n" + b["content"].strip() + "\n```")
        else:
            out.append("```output\n" + b["content"].strip() + "\n```")
    return "\n".join(x for x in out if x)


# ---------------------------------------------------------------------------------------------------------------------
# Row schemas (one `datasets.Features` per stage). Column names are constants so stages never spell them twice.
# ---------------------------------------------------------------------------------------------------------------------

BLOCKS = List({"type": Value("string"), "content": Value("string")})

SEED_FEATURES = Features(
    {
        "id": Value("string"),  # stable: "gsm8k/train/12", "math/train/algebra/0.json"
        "source": Value("string"),  # "gsm8k" | "math" | user-given name
        "question": Value("string"),
        "solution": Value("string"),
        "answer": Value("string"),
        "level": Value("int32"),  # MATH level 1-5; null for GSM8K
        "type": Value("string"),  # MATH subject; null for GSM8K
    }
)

# Shared lineage of every generated row. ``model``/``revision`` name the model that produced the row's new content.
_LINEAGE = {
    "seed_id": Value("string"),
    "source": Value("string"),
    "round": Value("int32"),  # augmentation round 1..K
    "prompt_id": Value("string"),  # which rewrite prompt (Table 1 or MetaMath method)
}

AUGMENTED_FEATURES = Features(
    {
        "id": Value("string"),  # augmented-solution id
        **_LINEAGE,
        "parent_id": Value("string"),  # the solution this one rewrites (seed id for round 1)
        "solution": Value("string"),
        "model": Value("string"),
        "revision": Value("string"),
        # MetaMath's augmenters write new *questions* (back-translation passes them through) and keep the seed's
        # solution; MathGenie's rewrites leave this null.
        "question": Value("string"),
    }
)

BACK_TRANSLATED_FEATURES = Features(
    {
        "question_id": Value("string"),
        **_LINEAGE,
        "augmented_id": Value("string"),
        "augmented_solution": Value("string"),
        "question": Value("string"),
        "model": Value("string"),
        "revision": Value("string"),
    }
)

SOLVED_FEATURES = Features(
    {
        "solution_id": Value("string"),  # "{question_id}/s{k}"
        "question_id": Value("string"),
        **_LINEAGE,
        "question": Value("string"),
        "blocks": BLOCKS,  # the assistant's LCE blocks, executions included
        "answer": Value("string"),  # extracted final answer; null if none
        "finish_reason": Value("string"),  # "endofmessage" | "max_blocks" | "length" | "error"
        "num_code_blocks": Value("int32"),
        "model": Value("string"),
        "revision": Value("string"),
    }
)

VERIFIED_FEATURES = Features(
    {
        **SOLVED_FEATURES,
        "agreement": Value("float32"),  # share of the question's solutions with the majority answer
        "verification": BLOCKS,  # the verifier's LCE rationale
        "verdict": Value("string"),  # "correct" | "wrong" | "unknown"
        "verifier_model": Value("string"),
        "verifier_revision": Value("string"),
    }
)

STAGE_FEATURES = {
    "seed": SEED_FEATURES,
    "augmented": AUGMENTED_FEATURES,
    "back_translated": BACK_TRANSLATED_FEATURES,
    "solved": SOLVED_FEATURES,
    "verified": VERIFIED_FEATURES,
}


def to_messages(row: dict, system: str = DEFAULT_SYSTEM) -> list[dict]:
    """A solved/verified row → the LCE conversation used for training MathGenieLM."""
    return [
        {"role": "system", "content": [block("text", system)]},
        {"role": "user", "content": [block("text", row["question"])]},
        {"role": "assistant", "content": list(row["blocks"])},
    ]


def empty_dataset(stage: str) -> datasets.Dataset:
    features = STAGE_FEATURES[stage]
    return datasets.Dataset.from_dict({k: [] for k in features}, features=features)
