"""Prompt texts of every stage. The texts live in YAML files next to this module (``prompts/*.yaml``) so they can
be reviewed without reading Python; this module only fills them in.

- ``mathgenie.yaml``: the paper's prompts, verbatim: Table 1 (augmentation), Table 2 (back-translation),
  Table 10 (verification).
- ``solve.yaml``: the system prompts that let a chat model that never saw the LCE format write executable code.
- ``metamath.yaml``: MetaMath's rephrase / self-verification / FOBAR augmentations.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

import yaml


@lru_cache(maxsize=None)
def load(name: str) -> dict:
    """The parsed ``prompts/{name}.yaml``."""
    text = (resources.files("mathgenie.generation") / "prompts" / f"{name}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


# ---------------------------------------------------------------------------------------------------------------------
# MathGenie (Tables 1, 2, 10)
# ---------------------------------------------------------------------------------------------------------------------


def augment_prompt_ids() -> list[str]:
    return list(load("mathgenie")["augment"])


def augment_prompt(prompt_id: str, solution: str) -> str:
    """Table 1 prompt ``prompt_id`` ("1".."4") filled with ``solution``."""
    prompts = load("mathgenie")["augment"]
    if prompt_id not in prompts:
        raise ValueError(f"augment prompt id {prompt_id!r} does not exist; expected one of {list(prompts)}")
    return prompts[prompt_id].format(solution=solution.strip())


def back_translate_prompt(solution: str) -> str:
    return load("mathgenie")["back_translate"].format(solution=solution.strip())


def back_translate_prefix() -> str:
    return load("mathgenie")["back_translate_prefix"]


def verify_prompt(question: str, solution: str) -> str:
    """Table 10. ``solution`` is plain text (`schema.blocks_to_plain_text` of an LCE solution)."""
    return load("mathgenie")["verify"].format(question=question.strip(), solution=solution.strip())


# Leading labels a chat model tends to add before a rewritten solution ("New solution:", "**Solution:**").
_SOLUTION_LABEL = re.compile(r"^\s*(\*\*)?\s*(new|augmented|rewritten|modified)?\s*solution\s*:?\s*(\*\*)?\s*:?\s*",
                             re.I)


def strip_solution_label(text: str) -> str:
    return _SOLUTION_LABEL.sub("", text.strip(), count=1).strip()


# ---------------------------------------------------------------------------------------------------------------------
# Solver system prompts (chat models without LCE training)
# ---------------------------------------------------------------------------------------------------------------------


def solve_example() -> tuple[str, list[dict]]:
    """The one worked example (question, LCE blocks) shown to models that do not know the solution format."""
    p = load("solve")
    return p["example_question"], [dict(b) for b in p["example_blocks"]]


def markdown_system() -> str:
    return load("solve")["markdown_system"]


def lce_system() -> str:
    return load("solve")["lce_system"]


# ---------------------------------------------------------------------------------------------------------------------
# MetaMath
# ---------------------------------------------------------------------------------------------------------------------


def rephrase_messages(question: str) -> list[dict]:
    p = load("metamath")
    messages = [{"role": "system", "content": p["rephrase_system"]}]
    for ex in p["rephrase_examples"]:
        messages += [
            {"role": "user", "content": p["rephrase_user"].format(question=ex["question"])},
            {"role": "assistant", "content": ex["rephrased"]},
        ]
    return messages + [{"role": "user", "content": p["rephrase_user"].format(question=question.strip())}]


def sv_messages(masked_question: str, answer: str) -> list[dict]:
    p = load("metamath")
    messages = [{"role": "system", "content": p["sv_system"]}]
    for ex in p["sv_examples"]:
        messages += [
            {"role": "user", "content": p["sv_user"].format(question=ex["question"], answer=ex["answer"])},
            {"role": "assistant", "content": ex["statement"]},
        ]
    return messages + [{"role": "user", "content": p["sv_user"].format(question=masked_question, answer=answer)}]


def sv_suffix(variable: str) -> str:
    return load("metamath")["sv_suffix"].format(variable=variable)


def fobar_suffix(answer: str, variable: str) -> str:
    return load("metamath")["fobar_suffix"].format(answer=answer, variable=variable)


# ---------------------------------------------------------------------------------------------------------------------
# Rendering for an engine
# ---------------------------------------------------------------------------------------------------------------------


def render(engine, messages: list[dict] | str, template: str = "chat", prefill: str = "") -> str:
    """The prompt string for ``engine``. ``template="chat"``: the model's chat template with the generation prompt,
    then ``prefill`` (text the answer is made to start with). ``"raw"``: the message texts joined by newlines plus a
    final newline: the ``plain`` format of `mathgenie.training.backtranslation` (a model fine-tuned on
    prompt-completion pairs writes e.g. ``New Problem:`` itself, so there is no prefill)."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if template == "raw":
        return "\n".join(m["content"] for m in messages) + "\n"
    if template != "chat":
        raise ValueError(f"template={template!r}: expected 'chat' or 'raw'")
    return engine.apply_chat_template(messages) + prefill


def system_for_card(fmt: str, system: str | None, few_shot: bool) -> str:
    """The system prompt a solve/verify run used, as its dataset card shows it (with the worked example)."""
    from mathgenie.schema import blocks_to_plain_text

    if system is None:
        default = lce_system() if few_shot else "(empty, as in MathCoder)"
        system = markdown_system() if fmt == "markdown" else default
    if few_shot:
        question, blocks = solve_example()
        system += f"\n\nOne worked example shown before each question:\nQuestion: {question}\n"
        system += blocks_to_plain_text(blocks)
    return system
