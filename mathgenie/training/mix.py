"""The training mix of the LCE recipes (M_code and MathGenieLM): named sources, each a dataset, the kind of sample it
gives and a weight.

- ``kind: solutions``: (question → code-integrated solution). Rows with ``question`` + ``blocks`` (the solve/verify
  stages, a pushed D_code ``solutions`` config) or MathCoder's ``messages``.
- ``kind: verifications``: (question, solution → verification rationale), the paper's Table 10 prompt in the user
  turn, rendered by the verify stage's own `prompts.verify_prompt` so that training and the stage cannot disagree.
  Rows with ``question`` + ``verification`` + ``solution`` (plain text: a D_code ``verifications`` config) or
  ``blocks`` (the verified stage, flattened by `schema.blocks_to_plain_text` as the stage does).
- ``format: mathcoder`` reads the published MathGenie layout (``MathGenie/MATH-GSM8K-Tool-81K``,
  ``MathGenie/MathGenieData``, or local copies) through the D_code builder (`mathgenie.builders.dcode`).
- ``weight``: how often each row is used: 1 = once, 0.5 = a seeded random half, 2 = twice, 0 = not loaded.

The paper's mix (MathGenie §2-3, Table 5) is the default of configs/train_mathgenie_lm.yaml; M_code's (D_code only)
that of configs/train_mcode.yaml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

KINDS = ("solutions", "verifications")
FORMATS = ("rows", "mathcoder")


@dataclass(frozen=True)
class MixSource:
    name: str = field(metadata={"help": "Name of this part of the mix (logs, card)."})
    dataset: str = field(metadata={"help": "Hub dataset repo id or local path."})
    kind: str = field(default="solutions", metadata={"help": "`solutions` or `verifications` samples."})
    weight: float = field(default=1.0, metadata={"help": "Times each row is used (fractions: a seeded subset)."})
    config: str | None = field(default=None, metadata={"help": "Hub config (e.g. `solutions` of a pushed D_code)."})
    split: str = field(default="train", metadata={"help": "Split."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (resolved to a sha for the card)."})
    format: str = field(default="rows", metadata={"help": "`rows` (our rows or `messages`) or `mathcoder` (the "
                                                          "published MathGenie jsonl, via the D_code builder)."})
    exclude_verdicts: tuple[str, ...] | None = field(default=None, metadata={"help": "Drop rows with these verdicts "
                                                                              "(None: the recipe's)."})
    require_finished: bool | None = field(default=None, metadata={"help": "Drop cut solutions (None: the recipe's)."})

    def __post_init__(self):
        where = f"mix source {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"mix source {self.name!r}: give a non-empty `name`")
        if not self.dataset or not isinstance(self.dataset, str):
            raise ValueError(f"{where}: `dataset` is required (a Hub repo id or a local path)")
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind={self.kind!r}; expected one of {KINDS}")
        if self.format not in FORMATS:
            raise ValueError(f"{where}: format={self.format!r}; expected one of {FORMATS}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not self.weight >= 0:
            raise ValueError(f"{where}: weight={self.weight!r}; give a number >= 0 (1 = every row once)")
        if self.exclude_verdicts is not None:
            object.__setattr__(self, "exclude_verdicts", tuple(self.exclude_verdicts))

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_mix(entries) -> list[MixSource]:
    """YAML entries (mappings of `MixSource` fields) → sources; errors name the entry and the field."""
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"`mix` must be a non-empty list of sources (name, dataset, kind, weight, ...), got "
                         f"{entries!r:.100}")
    known = {f.name for f in fields(MixSource)}
    sources = []
    for i, entry in enumerate(entries):
        if isinstance(entry, MixSource):
            sources.append(entry)
            continue
        label = f"mix[{i}]" + (f" ({entry.get('name')!r})" if isinstance(entry, dict) and entry.get("name") else "")
        if not isinstance(entry, dict):
            raise ValueError(f"{label}: expected a mapping of {sorted(known)}, got {entry!r:.100}")
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"{label}: unknown field(s) {unknown}; valid fields: {sorted(known)}")
        try:
            sources.append(MixSource(**entry))
        except TypeError as e:  # a required field missing
            raise ValueError(f"{label}: {e}; `name` and `dataset` are required") from None
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"`mix` source names must be distinct: {names}")
    if not any(s.weight > 0 for s in sources):
        raise ValueError("every `mix` source has weight 0: nothing to train on")
    return sources


def weighted_indices(num_rows: int, weight: float, seed: int) -> list[int]:
    """Row indices for ``weight``: each row ``floor(weight)`` times, plus ``round(frac * num_rows)`` distinct rows
    drawn with ``seed``, in order."""
    import random

    whole, frac = math.floor(weight), weight - math.floor(weight)
    extra = sorted(random.Random(seed).sample(range(num_rows), round(frac * num_rows))) if frac else []
    return sorted(list(range(num_rows)) * whole + extra)


def verification_messages(row: dict, system: str) -> list[dict]:
    """A verification sample: the verify stage's Table 10 prompt on (question, solution) → the rationale blocks."""
    from mathgenie import schema
    from mathgenie.generation.prompts import verify_prompt

    solution = row.get("solution")
    if not solution:
        solution = schema.blocks_to_plain_text(row["blocks"])
    return [
        {"role": "system", "content": [schema.block("text", system)]},
        {"role": "user", "content": [schema.block("text", verify_prompt(row["question"], solution))]},
        {"role": "assistant", "content": list(row["verification"])},
    ]
