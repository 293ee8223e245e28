"""A seed's family (the seed and everything generated from it) and the checks a new sample passes to join it:
complete, long enough, not an exact or near duplicate (word 3-gram Jaccard) of a member. Shared by the augmenters of
`mathgenie.generation.stages.augment` and `mathgenie.generation.stages.metamath` and by back-translation."""

from __future__ import annotations

import re

from mathgenie.generation.engine import SamplingParams
from mathgenie.generation.funnel import StageStats


def sampling(config) -> SamplingParams:
    return SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens)


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def shingles(text: str, n: int = 3) -> frozenset:
    words = normalize(text).split()
    if len(words) < n:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class Family:
    """The texts of one seed's family, for duplicate checks."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self._exact: set[str] = set()
        self._shingles: list[frozenset] = []

    def is_duplicate(self, text: str) -> bool:
        norm = normalize(text)
        if norm in self._exact:
            return True
        if self.threshold < 1.0:
            s = shingles(text)
            return any(jaccard(s, other) >= self.threshold for other in self._shingles)
        return False

    def add(self, text: str) -> None:
        self._exact.add(normalize(text))
        if self.threshold < 1.0:
            self._shingles.append(shingles(text))


def keep(text: str, completion, config, family: Family, stats: StageStats) -> bool:
    """Whether a generated sample joins its family: complete, long enough, not a near-duplicate (else counted)."""
    if completion is not None and completion.finish_reason in ("length", "rejected"):
        stats.drop("truncated" if completion.finish_reason == "length" else "rejected")
    elif len(text) < config.min_chars:
        stats.drop("too_short")
    elif family.is_duplicate(text):
        stats.drop("duplicate")
    else:
        family.add(text)
        return True
    return False
