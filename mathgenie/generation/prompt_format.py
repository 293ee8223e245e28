"""The prompt format a back-translation model was trained with, saved beside its weights so generation cannot disagree
with training::

    fmt = prompt_format.for_engine(engine, template="auto")   # reads {model dir}/mathgenie_prompt.json
    prompt = fmt.render(engine, solution)

`mathgenie.training` writes ``mathgenie_prompt.json`` into the model folder (and the same record into the model
card's metadata, key ``mathgenie_prompt``) when it saves a back-translation model: the template (``chat``: the
instruction is the user turn of the tokenizer's chat template and the answer is prefilled with the answer prefix;
``raw``: the instruction then a newline, the model writes the prefix itself), the instruction text, the answer prefix
and the system prompt. The back_translate stage reads it from the resolved model folder; a model without the file (any
instruct model) gets the pipeline's own Table 2 prompt with the configured template (``auto`` = ``chat``). A config
that sets ``template`` explicitly to the other format is an error, not a silent mismatch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from mathgenie.generation import prompts

FILE_NAME = "mathgenie_prompt.json"
CARD_KEY = "mathgenie_prompt"  # the same record in the model card's YAML metadata
TEMPLATES = ("chat", "raw")


@dataclass(frozen=True)
class PromptFormat:
    template: str  # "chat" or "raw" (the training recipe's "plain")
    instruction: str  # with a {solution} field
    answer_prefix: str  # what the answer starts with ("New Problem:"); stripped from generated questions
    system_prompt: str | None = None
    task: str = "back_translate"

    def __post_init__(self):
        if self.template not in TEMPLATES:
            raise ValueError(f"prompt format template={self.template!r}: expected one of {TEMPLATES}")
        if "{solution}" not in self.instruction:
            raise ValueError(f"prompt format instruction {self.instruction!r} has no {{solution}} field")

    @classmethod
    def default(cls, template: str = "chat") -> PromptFormat:
        """The pipeline's own format: MathGenie Table 2 (``prompts/mathgenie.yaml``)."""
        return cls(template=template, instruction=prompts.back_translate_prompt("{solution}"),
                   answer_prefix=prompts.back_translate_prefix())

    def messages(self, solution: str) -> list[dict]:
        user = {"role": "user", "content": self.instruction.replace("{solution}", solution.strip())}
        return ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + [user]

    def render(self, engine, solution: str) -> str:
        """The prompt string for one solution: chat template + prefilled prefix, or the raw instruction + newline. The
        prefix is prefilled without its trailing space: in training the space belongs to the question's first token
        (" Bo"), so a prompt ending in a space would start the model on a token boundary it never saw."""
        prefill = self.answer_prefix if self.template == "chat" else ""
        return prompts.render(engine, self.messages(solution), self.template, prefill=prefill)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "prompt format") -> PromptFormat:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as e:
            raise ValueError(f"{where}: {e}") from e


def save(model_dir: str | Path, fmt: PromptFormat) -> Path:
    path = Path(model_dir) / FILE_NAME
    path.write_text(json.dumps(fmt.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def load(model_dir: str | Path) -> PromptFormat | None:
    """The format saved in ``model_dir``, or None when the model has no ``mathgenie_prompt.json``."""
    path = Path(model_dir) / FILE_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return PromptFormat.from_dict(data, where=str(path))


def model_dir(engine) -> Path | None:
    """The local folder of the engine's model: the checkpoint the engine loaded (`models.resolve`), else the spec's
    folder when it is one; None for a model only a server holds (OpenAI-compatible engine)."""
    path = getattr(engine, "model_path", None)
    if path is None and Path(engine.spec.model).expanduser().is_dir():
        from mathgenie.generation.models import resolve

        path = resolve(engine.spec).path
    return Path(path) if path else None


def for_engine(engine, template: str = "auto") -> PromptFormat:
    """The format to prompt ``engine``'s model with. ``template``: the config's ``model.template`` (``auto`` follows
    the model's metadata, ``chat`` without any)."""
    if template not in ("auto", *TEMPLATES):
        raise ValueError(f"template={template!r}: expected 'auto', 'chat' or 'raw'")
    folder = model_dir(engine) if engine is not None else None
    saved = load(folder) if folder is not None else None
    if saved is None:
        return PromptFormat.default("chat" if template == "auto" else template)
    if template != "auto" and template != saved.template:
        raise ValueError(f"back_translate: the model was trained with the {saved.template!r} prompt format "
                         f"({folder / FILE_NAME}) but the config sets model.template={template!r}; drop the template "
                         f"line (or set it to 'auto' or {saved.template!r}) so generation prompts it as it was trained")
    return saved
