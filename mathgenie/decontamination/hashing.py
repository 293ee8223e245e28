"""Vectorized text hashing for decontamination: words, word n-grams, whole texts, MinHash signatures, LSH bands.

Texts are normalized the same way everywhere: lowercase, and every run of characters that are not letters or digits
is one word break (``"Janet’s ducks, 16 eggs!"`` -> ``janet s ducks 16 eggs``). All hashes are 64-bit and
deterministic (no Python ``hash``, no random seed), computed with numpy over a whole batch at once: a batch of texts
is one UTF-8 byte buffer (pyarrow), words are runs of word bytes in it, and a word's hash is a tabulation hash of its
bytes. Only texts with non-ASCII characters go through a (slower) Unicode regex first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_U64 = np.uint64
_MIX1, _MIX2 = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB)
_GOLDEN = _U64(0x9E3779B97F4A7C15)  # odd: multiplier of the rolling n-gram hash and of position weights
_EMPTY_DOC = _U64(0x2545F4914F6CDD1D)  # the hash of a text with no words


def mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: every input bit affects every output bit."""
    h = h ^ (h >> _U64(30))
    h = h * _MIX1
    h ^= h >> _U64(27)
    h *= _MIX2
    h ^= h >> _U64(31)
    return h


# Tabulation table: one random 64-bit value per (position in word mod 64, byte value); 0 for bytes that are not part
# of a word, so they drop out of the XOR.
_TABLE = mix64(np.arange(64 * 256, dtype=_U64) * _GOLDEN + _U64(0x6D617468)).reshape(64, 256)
_TABLE[:, [b for b in range(128) if not chr(b).isalnum() or chr(b).isupper()]] = 0
_TABLE = _TABLE.reshape(-1)


@dataclass
class Words:
    """The hashed words of a batch of texts: ``hashes[offsets[i]:offsets[i+1]]`` are text i's words."""

    hashes: np.ndarray  # uint64
    offsets: np.ndarray  # int64, len = texts + 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1


def _normalized_bytes(texts: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> pa.Array:
    arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(list(texts), type=pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.large_string())
    arr = pc.utf8_lower(pc.fill_null(arr.cast(pa.large_string()), ""))
    non_ascii = pc.invert(pc.string_is_ascii(arr))
    if pc.any(non_ascii).as_py():  # non-ASCII punctuation (’, —, …) becomes a space; letters and digits stay
        cleaned = pc.replace_substring_regex(pc.filter(arr, non_ascii), r"[^\pL\pN]+", " ")
        arr = pc.replace_with_mask(arr, non_ascii, cleaned)
    return arr


def hash_words(texts: pa.Array | pa.ChunkedArray | Sequence[str | None]) -> Words:
    """Normalize and split ``texts`` into words and hash every word. None counts as an empty text."""
    arr = _normalized_bytes(texts)
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]] if arr.buffers()[2] else \
        np.zeros(0, np.uint8)
    rel = offsets - offsets[0]
    word = (data - np.uint8(97) < 26) | (data - np.uint8(48) < 10) | (data >= 128)  # [a-z0-9] or UTF-8 letter
    start = word.copy()  # first byte of a word: after a non-word byte, or a text's first byte
    start[1:] &= ~word[:-1]
    text_first = rel[:-1][rel[:-1] < len(data)]
    start[text_first] = word[text_first]
    index = np.arange(len(data), dtype=np.int32 if len(data) < 2**31 else np.int64)
    position = np.where(start, index, index.dtype.type(0))
    np.maximum.accumulate(position, out=position)
    position = index - position  # position of each byte in its word
    cells = (position & 63) << 8
    cells |= data
    firsts = np.flatnonzero(start)
    if len(firsts):  # tabulation hash: XOR of one table cell per byte (non-word bytes' cells are 0)
        hashes = mix64(np.bitwise_xor.reduceat(_TABLE[cells], firsts))
    else:
        hashes = np.zeros(0, dtype=_U64)
    counts = np.bincount(np.searchsorted(rel, firsts, side="right") - 1, minlength=n)
    word_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=word_offsets[1:])
    return Words(hashes, word_offsets)


def ngram_hashes(words: Words, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every word n-gram lying inside one text: (hash, text index, index of its first word in ``words.hashes``)."""
    h = words.hashes
    m = len(h) - n + 1
    if m <= 0:
        empty = np.zeros(0, np.int64)
        return np.zeros(0, _U64), empty, empty
    g = h[:m].copy()
    for j in range(1, n):  # Horner: h[i]*G^(n-1) + ... + h[i+n-1]  (mod 2**64)
        g *= _GOLDEN
        g += h[j : j + m]
    text = np.repeat(np.arange(len(words)), words.lengths)[:m]
    start = np.arange(m)
    inside = start + n <= words.offsets[text + 1]
    return g[inside], text[inside], start[inside]


def doc_hashes(words: Words) -> np.ndarray:
    """One hash per text of its whole word sequence: equal normalized texts <=> equal hashes (up to 2**-64)."""
    lengths = words.lengths
    position = np.arange(len(words.hashes)) - np.repeat(words.offsets[:-1], lengths)
    terms = words.hashes * (mix64(position.astype(_U64) + _U64(1)) | _U64(1))
    sums = np.zeros(len(terms) + 1, dtype=_U64)
    np.cumsum(terms, out=sums[1:])
    out = mix64((sums[words.offsets[1:]] - sums[words.offsets[:-1]]) ^ lengths.astype(_U64))
    out[lengths == 0] = _EMPTY_DOC
    return out


def shingles(words: Words, k: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of each text's word k-grams, and each text's offsets into them. A text shorter than k words is
    one shingle (its `doc_hashes` value), so every text has at least one."""
    lengths = words.lengths
    counts = np.maximum(lengths - k + 1, 1)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    out = np.empty(offsets[-1], dtype=_U64)
    g, text, start = ngram_hashes(words, k)
    out[offsets[text] + start - words.offsets[text]] = g
    short = np.flatnonzero(lengths < k)
    out[offsets[short]] = doc_hashes(words)[short]
    return ((out >> _U64(32)) ^ out).astype(np.uint32), offsets


def minhash_signatures(values: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int = 1,
                       chunk: int = 512) -> np.ndarray:
    """MinHash signatures, shape ``(num_perm, texts)``: for permutation p, the minimum over a text's shingles x of
    ``(a_p*x + b_p) mod 2**32`` (odd ``a_p``: a bijection of 32-bit values; uint32 arithmetic keeps numpy on SIMD).
    Every text needs at least one shingle (see `shingles`)."""
    p = np.arange(num_perm, dtype=_U64) + _U64(seed) * _U64(1 << 20)
    a = (mix64(p * _U64(2) + _U64(1)) >> _U64(32)).astype(np.uint32) | np.uint32(1)
    b = (mix64(p * _U64(2) + _U64(2)) >> _U64(32)).astype(np.uint32)
    n = len(offsets) - 1
    sig = np.empty((num_perm, n), dtype=np.uint32)
    for d0 in range(0, n, chunk):  # a (num_perm x shingles of `chunk` texts) block stays in cache
        d1 = min(n, d0 + chunk)
        s0, s1 = offsets[d0], offsets[d1]
        v = a[:, None] * values[None, s0:s1]
        v += b[:, None]
        sig[:, d0:d1] = np.minimum.reduceat(v, offsets[d0:d1] - s0, axis=1)
    return sig


def optimal_lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimizing the false positive + false negative probability mass around ``threshold``, as
    datasketch's ``MinHashLSH`` chooses them (equal weights)."""
    best, best_err = (1, 1), float("inf")
    lo, hi = np.linspace(0.0, threshold, 201), np.linspace(threshold, 1.0, 201)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(1 - (1 - lo**rows) ** bands, lo)
            fn = np.trapezoid((1 - hi**rows) ** bands, hi)
            if fp + fn < best_err:
                best, best_err = (bands, rows), fp + fn
    return best


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One key per (band, text); two texts share a band's key iff their ``rows`` signature values in it agree (up to
    2**-64)."""
    keys = np.empty((bands, sig.shape[1]), dtype=_U64)
    for band in range(bands):
        key = np.full(sig.shape[1], _U64(band + 1), dtype=_U64)
        for row in sig[band * rows : (band + 1) * rows]:
            key *= _GOLDEN
            key += row.astype(_U64)
        keys[band] = mix64(key)
    return keys
