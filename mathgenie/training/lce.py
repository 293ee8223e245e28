"""LCE special tokens, chat template and exact label masks for MathGenieLM.

The loss follows MathCoder's rule: train on every token the model must emit in the assistant turn and mask everything
the harness or the user provides. Per token of the rendered conversation (`schema.render_conversation`):

=================================================  =======
span                                               trained
=================================================  =======
BOS the tokenizer prepends (if any)                no
system and user turns (all their tokens)           no
``<|assistant|>`` (the harness writes it: it ends
the prompt of `schema.render_prompt`)              no
``<|text|>`` … ``<|endofblock|>``                  yes
``<|code|>`` … ``<|endofblock|>``                  yes
``<|execution|>`` … ``<|endofblock|>`` (the
sandbox's output, inserted by the harness)         no
``<|endofmessage|>`` closing the assistant turn    yes
=================================================  =======

Token ids are built per segment so every mask boundary is exact: each special token is one id, and each content
string is tokenized *after an anchor special token* (``<|text|>`` + content, anchor dropped). Special tokens are
added tokens, which tokenizers never merge with their neighbours, so the concatenation equals tokenizing the whole
rendered string; the anchor keeps SentencePiece tokenizers (Llama/Mistral) from adding the "▁" they put on the first
piece of a string but not after a special token. `encode_conversations` checks that equality on every row and fails
loudly if a tokenizer breaks it (a normalizer that looks across special tokens would).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mathgenie import schema

logger = logging.getLogger(__name__)

_ANCHOR = schema.TEXT


def add_lce_tokens(tokenizer, model=None) -> list[int]:
    """Add the 8 LCE special tokens and the LCE chat template to ``tokenizer``; grow ``model``'s embeddings when the
    vocabulary outgrows them and initialize the new rows to the mean embedding. Also makes ``<|endofmessage|>`` an
    end-of-sequence id of the model's generation config. Idempotent. Returns the ids of the tokens that were new."""
    vocab = tokenizer.get_vocab()
    new_tokens = [t for t in schema.SPECIAL_TOKENS if t not in vocab]
    old_len = len(tokenizer)
    tokenizer.add_special_tokens({"extra_special_tokens": schema.SPECIAL_TOKENS}, replace_extra_special_tokens=False)
    tokenizer.chat_template = schema.CHAT_TEMPLATE
    new_ids = tokenizer.convert_tokens_to_ids(new_tokens)
    if model is None:
        return new_ids
    embeddings = model.get_input_embeddings()
    if len(tokenizer) > embeddings.num_embeddings:
        # Exact size (no pad_to_multiple_of): the saved checkpoint's vocabulary then matches the tokenizer, as in
        # MathCoder's released models (32016 + 8 on CodeLlama).
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if new_ids:
        _init_rows_to_mean(model, new_ids, old_len)
    eom = tokenizer.convert_tokens_to_ids(schema.END_OF_MESSAGE)
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if eom not in eos:
        model.generation_config.eos_token_id = [eom, *eos]
    return new_ids


def _init_rows_to_mean(model, ids: list[int], old_len: int) -> None:
    """New token rows start at the mean of the old ones (input and, if untied, output embeddings). Models whose
    embedding matrix is larger than their tokenizer (Qwen2.5) reuse unused rows, which were never trained."""
    import torch
    from transformers.integrations import is_deepspeed_zero3_enabled

    matrices = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight is not matrices[0]:
        matrices.append(out.weight)
    if is_deepspeed_zero3_enabled():  # parameters are partitioned at load time under ZeRO-3
        import deepspeed

        ctx = deepspeed.zero.GatheredParameters(matrices, modifier_rank=0)
    else:
        import contextlib

        ctx = contextlib.nullcontext()
    with ctx, torch.no_grad():
        for weight in matrices:
            weight[ids] = weight[:old_len].mean(dim=0, keepdim=True).to(weight.dtype)


def special_prefix(tokenizer) -> list[int]:
    """The ids the tokenizer puts before a text by itself (BOS for Llama/Mistral, nothing for Qwen/SmolLM2): what
    vLLM prepends to a prompt string at inference, so training sequences start the same way."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(with_special) - len(without) + 1):
        if with_special[start : start + len(without)] == without:
            return list(with_special[:start])
    return []


def conversation_segments(messages: Sequence[dict]) -> list[tuple[str, bool, bool]]:
    """The rendered conversation as ``(piece, is_special_token, trained)`` segments; their concatenation is
    `schema.render_conversation(messages)`."""
    segments: list[tuple[str, bool, bool]] = []
    for msg in messages:
        role, content = msg["role"], msg["content"]
        if role not in schema.ROLES:
            raise schema.LCEFormatError(f"unknown role {role!r}; expected one of {schema.ROLES}")
        assistant = role == "assistant"
        segments.append(("<|" + role + "|>", True, False))
        blocks = [schema.block("text", content)] if isinstance(content, str) else content
        for b in blocks:
            if b["type"] not in schema.BLOCK_TYPES:
                raise schema.LCEFormatError(f"unknown block type {b['type']!r}; expected one of {schema.BLOCK_TYPES}")
            trained = assistant and b["type"] != "execution"
            segments.append(("<|" + b["type"] + "|>", True, trained))
            if b["content"]:
                segments.append((b["content"], False, trained))
            segments.append((schema.END_OF_BLOCK, True, trained))
        segments.append((schema.END_OF_MESSAGE, True, assistant))
    return segments


def encode_conversations(
    conversations: Sequence[Sequence[dict]], tokenizer, *, check: bool = True, row_ids: Sequence[Any] | None = None
) -> dict[str, list[list[int]]]:
    """Token ids and exact masks for a batch of LCE conversations: ``{"input_ids", "assistant_masks"}`` where a mask
    of 1 marks a token the loss is computed on (TRL's pre-tokenized format). One batched tokenizer call for all
    content pieces; with ``check`` a second one verifies the ids equal tokenizing the rendered strings."""
    special_ids = dict(zip(schema.SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(schema.SPECIAL_TOKENS)))
    unk = tokenizer.unk_token_id
    if any(i is None or (unk is not None and i == unk) for i in special_ids.values()):
        raise ValueError(
            "the tokenizer lacks the LCE special tokens; call `mathgenie.training.lce.add_lce_tokens(tokenizer, "
            "model)` first (or set `add_lce_tokens: true` in the config)"
        )
    prefix = special_prefix(tokenizer)
    all_segments = [conversation_segments(conv) for conv in conversations]
    pieces = []
    for i, segments in enumerate(all_segments):
        for piece, is_special, _ in segments:
            if is_special:
                continue
            if any(tok in piece for tok in schema.SPECIAL_TOKENS):
                where = f"row {row_ids[i]!r}" if row_ids is not None else f"conversation {i}"
                raise schema.LCEFormatError(f"{where}: an LCE special token occurs inside a block: {piece[:80]!r}")
            pieces.append(_ANCHOR + piece)
    anchor_id = special_ids[_ANCHOR]
    piece_ids = iter(tokenizer(pieces, add_special_tokens=False)["input_ids"]) if pieces else iter(())

    out: dict[str, list[list[int]]] = {"input_ids": [], "assistant_masks": []}
    for segments in all_segments:
        ids, mask = list(prefix), [0] * len(prefix)
        for piece, is_special, trained in segments:
            if is_special:
                seg = [special_ids[piece]]
            else:
                seg = next(piece_ids)
                if not seg or seg[0] != anchor_id:
                    raise ValueError(f"the tokenizer split the anchor {_ANCHOR!r}; it must be one added token")
                seg = seg[1:]
            ids.extend(seg)
            mask.extend([int(trained)] * len(seg))
        out["input_ids"].append(ids)
        out["assistant_masks"].append(mask)

    if check:
        rendered = [schema.render_conversation(conv) for conv in conversations]
        expected = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        for i, (got, want) in enumerate(zip(out["input_ids"], expected)):
            if got[len(prefix) :] != want:
                got = got[len(prefix) :]
                pos = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                where = f"row {row_ids[i]!r}" if row_ids is not None else f"conversation {i}"
                raise ValueError(
                    f"{where}: per-segment token ids differ from tokenizing the rendered conversation at token {pos} "
                    f"({tokenizer.decode(want[max(0, pos - 5) : pos + 5])!r}); this tokenizer merges text across "
                    "special tokens, so exact LCE masks cannot be built for it"
                )
    return out
