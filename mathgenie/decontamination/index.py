"""Decontamination against the eval sets and deduplication of generated questions.

Every question is normalized (lowercase; each run of characters that are not letters or digits is one word break) and
its words are hashed. A question is dropped for the first rule that fires, in this order:

1. ``eval_exact``: its normalized text equals an eval question's.
2. ``eval_ngram``: it shares a word ``ngram``-gram (13 by default) with an eval question. A text shorter than
   ``ngram`` words has no n-gram, so short questions and short eval questions (DeepMind Mathematics has many) are
   only compared by rules 1 and 3.
3. ``eval_minhash``: MinHash LSH puts it in a bucket with an eval question (word 5-gram shingles; a text shorter than
   5 words is one shingle; bands and rows chosen for ``minhash_threshold`` as in datasketch).
4. ``exact_duplicate``: its normalized text equals that of an earlier question (``dedup_within``).
5. ``near_duplicate``: it shares an LSH bucket with an earlier question (``dedup_within``).

"Earlier" means a lower row index among the rows that passed rules 1-3, so the first occurrence is kept and the result
does not depend on batching or ``num_proc``. With ``group_column`` (e.g. ``question_id`` of solved/verified rows,
where one question has several solution rows) the rules apply to questions and a question's rows go together.

Hashing and MinHash are vectorized numpy (`mathgenie.decontamination.hashing`); datasketch computes the same sketch one
text at a time and rensa hands signatures back as Python lists, both slower end to end at this scale (see
``benchmarks/decontamination.py``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from mathgenie.decontamination.hashing import (band_keys, doc_hashes, hash_words, minhash_signatures,
                                               ngram_hashes, optimal_lsh_params, shingles)

logger = logging.getLogger(__name__)

DEFAULT_NGRAM = 13
DEFAULT_THRESHOLD = 0.8
DEFAULT_NUM_PERM = 128
SHINGLE_WORDS = 5
REASONS = ("eval_exact", "eval_ngram", "eval_minhash", "exact_duplicate", "near_duplicate")
_KEEP = 0  # reason code 0 = kept; code i+1 = REASONS[i]
_CODE = {reason: code for code, reason in enumerate(REASONS, start=1)}

_U64 = np.uint64


class DecontaminationError(ValueError):
    """Bad input to decontamination (missing column, wrong type, bad parameter); the message says which and the fix."""


# ---------------------------------------------------------------------------------------------------------------------
# The eval-set index and the scan
# ---------------------------------------------------------------------------------------------------------------------


class _Lookup:
    """Sorted distinct 64-bit keys, each with the bitmask of the eval sets that have it. A bitmap of the keys' top
    bits answers most misses before the binary search."""

    def __init__(self, keys: np.ndarray, masks: np.ndarray):
        order = np.argsort(keys, kind="stable")
        keys, masks = keys[order], masks[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
        self.keys = keys[starts]
        self.masks = np.bitwise_or.reduceat(masks, starts) if len(keys) else masks
        bits = int(np.clip(np.ceil(np.log2(max(len(self.keys), 1) * 16)), 10, 26))  # ~6% of the bitmap set
        self._shift = _U64(64 - bits)
        self._bitmap = np.zeros(1 << bits, dtype=bool)
        self._bitmap[self.keys >> self._shift] = True

    def find(self, queries: np.ndarray) -> np.ndarray:
        """The eval-set mask of each query key (0 where no eval set has it)."""
        out = np.zeros(len(queries), dtype=_U64)
        if len(self.keys) == 0 or len(queries) == 0:
            return out
        maybe = np.flatnonzero(self._bitmap[queries >> self._shift])
        pos = np.minimum(np.searchsorted(self.keys, queries[maybe]), len(self.keys) - 1)
        hit = self.keys[pos] == queries[maybe]
        out[maybe[hit]] = self.masks[pos[hit]]
        return out


@dataclass
class _Sketch:
    """What the scan needs of a batch of texts."""

    doc_hash: np.ndarray  # (texts,)
    ngrams: np.ndarray  # n-gram hashes
    ngram_doc: np.ndarray  # text index of each n-gram
    bands: np.ndarray  # (bands, texts) LSH keys; (0, texts) without MinHash


@dataclass
class EvalSketch:
    """What the index keeps of one eval set: hashes only (whole texts, distinct n-grams, LSH band keys)."""

    questions: int
    doc_hash: np.ndarray  # (questions,)
    ngrams: np.ndarray  # distinct n-gram hashes
    bands: np.ndarray  # (bands, questions)


@dataclass
class Flags:
    """Per input text: ``reason`` code (0 = kept, i = ``REASONS[i-1]``) and ``eval_mask``, the bitmask of the eval
    sets (``Decontaminator.names``) it overlaps under that reason."""

    reason: np.ndarray  # int8
    eval_mask: np.ndarray  # uint64

    def reasons(self) -> list[str | None]:
        return [None if r == _KEEP else REASONS[r - 1] for r in self.reason.tolist()]


class Decontaminator:
    """An index of eval questions, and the scan of generated questions against it (module docstring: the rules).

    ``eval_sets`` maps a name (e.g. ``"gsm8k"``) to its questions. ``minhash_threshold=None`` turns MinHash off (rules
    3 and 5). Build it once and call `flag` / `decontaminate` on as many datasets as needed.
    """

    def __init__(self, eval_sets: Mapping[str, Iterable[str]], *, ngram: int = DEFAULT_NGRAM,
                 minhash_threshold: float | None = DEFAULT_THRESHOLD, num_perm: int = DEFAULT_NUM_PERM,
                 shingle_words: int = SHINGLE_WORDS, seed: int = 1):
        if not eval_sets:
            raise DecontaminationError("eval_sets is empty: give at least one eval set, e.g. {'gsm8k': questions}")
        self._configure(ngram, minhash_threshold, num_perm, shingle_words, seed)
        sketches = {}
        for name, questions in eval_sets.items():
            questions = list(questions)
            sketch = self._sketch(questions)
            sketches[name] = EvalSketch(len(questions), sketch.doc_hash, np.unique(sketch.ngrams), sketch.bands)
        self._index(sketches)

    def _configure(self, ngram, minhash_threshold, num_perm, shingle_words, seed) -> None:
        if not isinstance(ngram, int) or ngram < 1:
            raise DecontaminationError(f"ngram={ngram!r}: give a positive number of words (13 is the default)")
        if minhash_threshold is not None and not 0.0 < minhash_threshold < 1.0:
            raise DecontaminationError(f"minhash_threshold={minhash_threshold!r}: give a Jaccard similarity in "
                                       "(0, 1), e.g. 0.8, or None to turn MinHash off")
        if not isinstance(num_perm, int) or num_perm < 2:
            raise DecontaminationError(f"num_perm={num_perm!r}: give the number of MinHash permutations, e.g. 128")
        self.ngram, self.minhash_threshold, self.num_perm = ngram, minhash_threshold, num_perm
        self.shingle_words, self.seed = shingle_words, seed
        self.bands, self.rows = optimal_lsh_params(minhash_threshold, num_perm) if minhash_threshold else (0, 0)

    def _index(self, sketches: Mapping[str, EvalSketch]) -> None:
        if len(sketches) > 64:
            raise DecontaminationError(f"eval_sets has {len(sketches)} sets; at most 64 are supported")
        self._sketches = dict(sketches)
        self.names = list(sketches)
        self.sizes = {name: s.questions for name, s in sketches.items()}
        masks = [_U64(1) << _U64(bit) for bit in range(len(sketches))]
        parts = list(zip(sketches.values(), masks))
        self._exact = _Lookup(np.concatenate([s.doc_hash for s, _ in parts]),
                              np.concatenate([np.full(len(s.doc_hash), m) for s, m in parts]))
        self._ngram = _Lookup(np.concatenate([s.ngrams for s, _ in parts]),
                              np.concatenate([np.full(len(s.ngrams), m) for s, m in parts]))
        self._bands = [_Lookup(np.concatenate([s.bands[band] for s, _ in parts]),
                               np.concatenate([np.full(s.bands.shape[1], m) for s, m in parts]))
                       for band in range(self.bands)]
        logger.info("eval index: %s questions, %d distinct %d-grams, LSH %d bands x %d rows",
                    sum(self.sizes.values()), len(self._ngram.keys), self.ngram, self.bands, self.rows)

    def select(self, names: Sequence[str], *, minhash: bool = True) -> Decontaminator:
        """This index restricted to the eval sets ``names`` (and without the MinHash rule unless ``minhash``)."""
        unknown = [n for n in names if n not in self._sketches]
        if unknown:
            raise DecontaminationError(f"eval set(s) {unknown} are not in the index; it holds {self.names}")
        out = Decontaminator.__new__(Decontaminator)
        out._configure(self.ngram, self.minhash_threshold if minhash else None, self.num_perm, self.shingle_words,
                       self.seed)
        keep_bands = out.bands > 0
        out._index({n: self._sketches[n] if keep_bands else
                    dataclasses.replace(self._sketches[n], bands=self._sketches[n].bands[:0]) for n in names})
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write the index (hashes only, no question text) as one compressed ``.npz`` file; `load` reads it back."""
        arrays = {"params": np.array(json.dumps({**self.params(), "seed": self.seed, "names": self.names}))}
        for name, s in self._sketches.items():
            arrays |= {f"{name}/doc_hash": s.doc_hash, f"{name}/ngrams": np.sort(s.ngrams), f"{name}/bands": s.bands}
        tmp = Path(f"{path}.tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Decontaminator:
        with np.load(path) as z:
            params = json.loads(str(z["params"]))
            sketches = {name: EvalSketch(params["eval_sets"][name], z[f"{name}/doc_hash"], z[f"{name}/ngrams"],
                                         z[f"{name}/bands"]) for name in params["names"]}
        out = cls.__new__(cls)
        out._configure(params["ngram"], params["minhash_threshold"], params["num_perm"], params["shingle_words"],
                       params["seed"])
        out._index(sketches)
        return out

    def params(self) -> dict:
        return {"ngram": self.ngram, "minhash_threshold": self.minhash_threshold, "num_perm": self.num_perm,
                "bands": self.bands, "rows": self.rows, "shingle_words": self.shingle_words,
                "eval_sets": dict(self.sizes)}

    # -- scan ---------------------------------------------------------------------------------------------------------
    def _sketch(self, texts) -> _Sketch:
        words = hash_words(texts)
        ngrams, ngram_doc, _ = ngram_hashes(words, self.ngram)
        if self.bands:  # only the bands x rows permutations the LSH reads are computed
            values, offsets = shingles(words, self.shingle_words)
            sig = minhash_signatures(values, offsets, self.bands * self.rows, self.seed)
            bands = band_keys(sig, self.bands, self.rows)
        else:
            bands = np.zeros((0, len(words)), dtype=_U64)
        return _Sketch(doc_hashes(words), ngrams, ngram_doc, bands)

    def _scan_batch(self, texts) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Eval rules 1-3 for one batch: (reason, eval_mask, doc_hash, band keys)."""
        sk = self._sketch(texts)
        n = len(sk.doc_hash)
        reason = np.zeros(n, dtype=np.int8)
        eval_mask = np.zeros(n, dtype=_U64)
        ngram_mask = np.zeros(n, dtype=_U64)
        found = self._ngram.find(sk.ngrams)
        hit = found != 0
        np.bitwise_or.at(ngram_mask, sk.ngram_doc[hit], found[hit])
        minhash_mask = np.zeros(n, dtype=_U64)
        for band, lookup in enumerate(self._bands):
            minhash_mask |= lookup.find(sk.bands[band])
        exact_mask = self._exact.find(sk.doc_hash)
        # later rules first, so the earliest rule that fires wins
        for rule, mask in (("eval_minhash", minhash_mask), ("eval_ngram", ngram_mask), ("eval_exact", exact_mask)):
            fired = mask != 0
            reason[fired], eval_mask[fired] = _CODE[rule], mask[fired]
        return reason, eval_mask, sk.doc_hash, sk.bands

    def flag(self, texts: pa.Array | pa.ChunkedArray | Sequence[str | None], *, dedup_within: bool = True,
             num_proc: int | None = None, batch_size: int = 50_000) -> Flags:
        """Apply the rules to ``texts`` (in order; the first occurrence of a duplicate is kept)."""
        n = len(texts)
        if isinstance(texts, (pa.Array, pa.ChunkedArray)):
            batches = [texts.slice(i, batch_size) for i in range(0, n, batch_size)]
        else:
            batches = [texts[i : i + batch_size] for i in range(0, n, batch_size)]
        workers = max(1, min(num_proc or os.cpu_count() or 1, len(batches) or 1))
        with ThreadPoolExecutor(workers) as pool:  # numpy and pyarrow release the GIL in the heavy calls
            parts = list(pool.map(self._scan_batch, batches))
        if not parts:
            return Flags(np.zeros(0, np.int8), np.zeros(0, _U64))
        reason = np.concatenate([p[0] for p in parts])
        eval_mask = np.concatenate([p[1] for p in parts])
        if dedup_within:
            doc_hash = np.concatenate([p[2] for p in parts])
            bands = np.concatenate([p[3] for p in parts], axis=1)
            alive = np.flatnonzero(reason == _KEEP)
            exact = ~_first_occurrence(doc_hash[alive])
            near = np.zeros(len(alive), dtype=bool)
            for band in bands:
                near |= ~_first_occurrence(band[alive])
            reason[alive[near]] = _CODE["near_duplicate"]
            reason[alive[exact]] = _CODE["exact_duplicate"]  # an exact copy is also a near one: exact wins
        return Flags(reason, eval_mask)


def _first_occurrence(keys: np.ndarray) -> np.ndarray:
    """True where a key appears for the first time."""
    first = np.zeros(len(keys), dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return first


