"""The back-translation model's format (MathGenie Table 2): a solution in, a new problem out.

The instruction text is the pipeline's own (`mathgenie.generation.prompts.back_translate_prompt`, from
``prompts/mathgenie.yaml``), so the generation stage prompts the trained model with exactly what it learned:

* ``chat`` (base models with a chat template): user turn ``Create a New Problem based on the Solution: {s}``,
  assistant turn ``New Problem: {q}`` rendered by the base tokenizer's template; at inference
  ``engine.chat([[{"role": "user", "content": back_translate_prompt(s)}]])``.
* ``plain`` (base models without one, the paper's setting): ``{instruction}\\n`` then ``New Problem: {q}`` + EOS; at
  inference `format_plain_prompt`. The newline ends the prompt on a token boundary (the paper's string has no
  separator, which would let the solution's last word merge with "New").

Either way the loss is on the completion only (its end-of-turn / EOS token included). The format is saved with the
model (`prompt_record`, written as ``mathgenie_prompt.json`` and into the model card) and the back_translate stage
reads it from there, so training and generation cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mathgenie.generation.prompt_format import PromptFormat
from mathgenie.generation.prompts import back_translate_prefix, back_translate_prompt

PROMPT_FORMATS = ("auto", "chat", "plain")


def prompt_record(prompt_format: str) -> PromptFormat:
    """What a model trained with ``prompt_format`` (``chat`` or ``plain``, resolved) must be prompted with: the
    instruction and prefix below, no system prompt (`chat_messages` has none), ``plain`` being generation's ``raw``."""
    if prompt_format not in ("chat", "plain"):
        raise ValueError(f"prompt_format={prompt_format!r}: resolve it to 'chat' or 'plain' first")
    return PromptFormat(template="chat" if prompt_format == "chat" else "raw",
                        instruction=back_translate_prompt("{solution}"), answer_prefix=back_translate_prefix())


def format_plain_prompt(solution: str) -> str:
    return back_translate_prompt(solution) + "\n"


def format_completion(question: str) -> str:
    return back_translate_prefix() + " " + question.strip()


def chat_messages(solution: str, question: str | None = None) -> list[dict]:
    messages = [{"role": "user", "content": back_translate_prompt(solution)}]
    if question is not None:
        messages.append({"role": "assistant", "content": format_completion(question)})
    return messages


def resolve_prompt_format(prompt_format: str, tokenizer) -> str:
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format={prompt_format!r}: expected one of {PROMPT_FORMATS}")
    if prompt_format == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "plain"
    if prompt_format == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt_format='chat' but the base tokenizer has no chat template; use 'plain'")
    return prompt_format


def encode_pairs(
    solutions: Sequence[str], questions: Sequence[str], tokenizer, *, prompt_format: str = "plain",
    row_ids: Sequence[Any] | None = None,
) -> dict[str, list[list[int]]]:
    """``{"input_ids", "completion_mask"}`` for a batch of (solution, question) pairs, the mask on the completion. The
    prompt's ids must be a prefix of the whole text's ids (TRL's rule); a row where they are not is an error."""
    from mathgenie.training.lce import special_prefix

    if prompt_format == "chat":
        prefix, eos = [], []  # chat templates write their own BOS and end-of-turn
        prompts = [tokenizer.apply_chat_template(chat_messages(s), tokenize=False, add_generation_prompt=True)
                   for s in solutions]
        fulls = [tokenizer.apply_chat_template(chat_messages(s, q), tokenize=False)
                 for s, q in zip(solutions, questions)]
    elif prompt_format == "plain":
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token; set one so the back-translation model learns to stop")
        prefix, eos = special_prefix(tokenizer), [tokenizer.eos_token_id]
        prompts = [format_plain_prompt(s) for s in solutions]
        fulls = [p + format_completion(q) for p, q in zip(prompts, questions)]
    else:
        raise ValueError(f"prompt_format={prompt_format!r}: expected 'chat' or 'plain' (resolve 'auto' first)")
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(fulls, add_special_tokens=False)["input_ids"]
    out: dict[str, list[list[int]]] = {"input_ids": [], "completion_mask": []}
    for i, (p, f) in enumerate(zip(prompt_ids, full_ids)):
        if not fulls[i].startswith(prompts[i]) or f[: len(p)] != p:
            where = f"row {row_ids[i]!r}" if row_ids is not None else f"pair {i}"
            raise ValueError(f"{where}: the tokenized prompt is not a prefix of prompt + completion "
                             f"(...{fulls[i][-80:]!r}); the loss mask would be wrong")
        out["input_ids"].append(prefix + f + eos)
        out["completion_mask"].append([0] * (len(prefix) + len(p)) + [1] * (len(f) - len(p) + len(eos)))
    return out
