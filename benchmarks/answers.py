"""Answer-checker throughput and accuracy on MATH-test-like answer pairs.

Pairs come from the 5,000 MATH test gold answers: for each gold, reformatted equivalents (frac/dfrac, a/b, decimals,
``x =``, ``$...$``, ``\\boxed{}``, spacing, ``\\left(\\right)``, thousands commas, reordered sets, units) and
perturbed non-equivalents (a number +-1, a digit changed, the sign flipped, an interval bracket flipped, a fraction
inverted). `check_batch` runs with ``num_workers=2`` (the pairs left after its fast paths go to at most 2 math-verify
processes); the baseline is plain math-verify (``parse`` + ``verify`` per pair, one process) on a random subsample, with our checker's accuracy on the same subsample beside it, and the same
subsample sent through the worker pool alone (math-verify + guard, no fast paths).

    flock /tmp/mathgenie-heavy.lock python benchmarks/answers.py [--data PATH] [--baseline-pairs 1500]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import time
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "math" / "test.jsonl"  # shipped real rows

_INT = re.compile(r"(?<![\d.])\d+(?![\d.])")
_SIMPLE_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}$")


def _terminating(fr: Fraction) -> bool:
    d = fr.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def equivalent_variants(gold: str, rng: random.Random) -> list[tuple[str, str]]:
    g = gold.strip()
    out = [("dollar-wrap", f"${g}$"), ("boxed-wrap", f"\\boxed{{{g}}}")]
    if "\\frac" in g:
        out.append(("frac->dfrac", g.replace("\\frac", "\\dfrac")))
    if "\\dfrac" in g:
        out.append(("dfrac->frac", g.replace("\\dfrac", "\\frac")))
    m = _SIMPLE_FRAC.match(g)
    if m:
        out.append(("a/b", f"{m.group(1)}{m.group(2)}/{m.group(3)}"))
        fr = Fraction(int(m.group(2)), int(m.group(3))) * (-1 if m.group(1) else 1)
        if _terminating(fr) and fr.denominator > 1:
            out.append(("decimal", str(float(fr))))
    if re.fullmatch(r"-?\d+", g):
        n = int(g)
        out.append(("n.0", f"{n}.0"))
        out.append(("x= prefix", f"x = {n}"))
        out.append(("units", f"{n} \\text{{ units}}"))
        if abs(n) >= 1000:
            out.append(("thousands-comma", f"{n:,}"))
    elif re.fullmatch(r"-?\d+\.\d+", g):
        out.append(("x= prefix", f"x = {g}"))
    if " " in g:  # a space that ends a command ("\\sec x", "\\ ") carries meaning: kept
        out.append(("no-spaces", re.sub(r"(?<![a-zA-Z\\])\s+", "", g)))
    elif len(g) > 1 and "\\text" not in g:
        ops = r"[+\-=]|\\cdot" if re.search(r"\d,(?:\\!)?\s*\d{3}", g) else r"[+\-=,]|\\cdot"  # keep 1,000 whole
        out.append(("spaces", re.sub(rf"(?<!\{{)({ops})(?!\}})", r" \1 ", g).strip()))
    if re.fullmatch(r"\((.*)\)", g) and "\\left" not in g and "\\cup" not in g:
        out.append(("left-right", f"\\left({g[1:-1]}\\right)"))
    sm = re.fullmatch(r"\\\{(.*)\\\}", g)
    listed = "," in g and not re.search(r"[(\[{]|\\!|\\text|\d,\d{3}", g)  # not a tuple or 1,000
    items = sm.group(1).split(",") if sm and "(" not in g else (g.split(",") if listed else [])
    if len(items) > 1 and all(i.strip() for i in items):
        rev = ", ".join(i.strip() for i in reversed(items))
        out.append(("reordered-set", f"\\{{{rev}\\}}" if sm else rev))
    return out


def perturbed_variants(gold: str, rng: random.Random) -> list[tuple[str, str]]:
    g = gold.strip()
    out = []
    unit = re.search(r"\\(?:text|mbox)\s*\{\s*[a-z]", g)  # leave "cm^2" in "5 \\text{ cm}^2" alone
    nums = [m for m in _INT.finditer(g) if unit is None or m.start() < unit.start()]
    if nums:
        m = rng.choice(nums)
        n = int(m.group())
        new = n + rng.choice([-1, 1]) if n > 0 else n + 1
        out.append(("number+-1", g[:m.start()] + str(new) + g[m.end():]))
        digits = m.group()
        pos = rng.randrange(len(digits))
        choices = [d for d in "0123456789" if d != digits[pos] and not (pos == 0 and d == "0" and len(digits) > 1)]
        changed = digits[:pos] + rng.choice(choices) + digits[pos + 1:]
        out.append(("digit-changed", g[:m.start()] + changed + g[m.end():]))
    if re.fullmatch(r"-?[\d.]+|-?\\frac\{\d+\}\{\d+\}", g) and not re.fullmatch(r"-?[0.]+", g):
        out.append(("sign-flipped", g[1:] if g.startswith("-") else "-" + g))
    if re.fullmatch(r"[\[(].*,.*[\])]", g) and "\\infty" in g or re.fullmatch(r"\\left[\[(].*\\right[\])]", g):
        i = g.index("(") if g.lstrip("\\left")[:1] == "(" else g.index("[")
        if "\\infty" not in g[:i + 8]:
            out.append(("bracket-flipped", g[:i] + ("[" if g[i] == "(" else "(") + g[i + 1:]))
        elif g.rstrip().endswith(("]", ")")) and not g.rstrip().endswith("\\infty)"):
            j = len(g.rstrip()) - 1
            out.append(("bracket-flipped", g[:j] + (")" if g[j] == "]" else "]") + g[j + 1:]))
    m = _SIMPLE_FRAC.match(g)
    if m and m.group(2) != m.group(3):
        out.append(("fraction-inverted", f"{m.group(1)}\\frac{{{m.group(3)}}}{{{m.group(2)}}}"))
    return out


def build_pairs(golds: list[str], seed: int = 0) -> list[tuple[str, str, bool, str]]:
    """(pred, gold, label, kind) tuples; at most 3 equivalents and 2 perturbations per gold."""
    rng = random.Random(seed)
    pairs = []
    for gold in golds:
        eq = equivalent_variants(gold, rng)
        ne = [(k, p) for k, p in perturbed_variants(gold, rng) if p.strip() != gold.strip()]
        for kind, pred in rng.sample(eq, min(3, len(eq))):
            pairs.append((pred, gold, True, kind))
        for kind, pred in rng.sample(ne, min(2, len(ne))):
            pairs.append((pred, gold, False, kind))
    rng.shuffle(pairs)
    return pairs


def accuracy(verdicts, pairs) -> tuple[float, float]:
    pos = [v for v, p in zip(verdicts, pairs) if p[2]]
    neg = [v for v, p in zip(verdicts, pairs) if not p[2]]
    return sum(pos) / max(1, len(pos)), sum(neg) / max(1, len(neg))


def run_math_verify(pairs) -> list[bool]:
    from math_verify import parse, verify

    return [bool(verify(parse(f"${g}$"), parse(f"${p}$"))) for p, g, _, _ in pairs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MATH test jsonl with an `answer` field")
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--baseline-pairs", type=int, default=1500, help="pairs for the plain math-verify baseline")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    golds = [json.loads(line)["answer"] for line in args.data.open()]
    golds = [g for g in golds if g and g.strip()]
    half = len(golds) // 2
    cold_pairs, warm_pairs = build_pairs(golds[:half], seed=0), build_pairs(golds[half:], seed=1)
    pairs = cold_pairs + warm_pairs
    n_eq = sum(p[2] for p in pairs)
    print(f"{len(golds)} MATH test golds -> {len(pairs)} pairs ({n_eq} equivalent, {len(pairs) - n_eq} perturbed)")

    from mathgenie.answers import check_batch, shutdown
    from mathgenie.answers.check import _cheap
    from mathgenie.answers.compare import _analyze
    from mathgenie.answers.pool import shared_pool

    shutdown()
    t0 = time.perf_counter()
    cold = check_batch([(p, g) for p, g, _, _ in cold_pairs], num_workers=args.num_workers)
    cold_s = time.perf_counter() - t0
    _analyze.cache_clear()  # the warm half has other golds; parent caches start empty again
    t0 = time.perf_counter()
    warm = check_batch([(p, g) for p, g, _, _ in warm_pairs], num_workers=args.num_workers)
    warm_s = time.perf_counter() - t0
    ours = cold + warm
    _analyze.cache_clear()
    n_hard = sum(_cheap(p, g) is None for p, g, _, _ in pairs)
    timeouts = shared_pool().timeouts
    shutdown()

    rng = random.Random(2)
    sample_idx = sorted(rng.sample(range(len(pairs)), min(args.baseline_pairs, len(pairs))))
    sample = [pairs[i] for i in sample_idx]
    t0 = time.perf_counter()
    mv = run_math_verify(sample)
    mv_s = time.perf_counter() - t0
    ours_sample = [ours[i] for i in sample_idx]
    from mathgenie.answers import CheckerPool

    with CheckerPool() as pool:  # every pair through the workers: what the fast paths save
        t0 = time.perf_counter()
        pooled = pool.run([(p, g) for p, g, _, _ in sample], timeout=5.0, num_workers=args.num_workers)
        pooled_s = time.perf_counter() - t0

    rec, fpr = accuracy(ours, pairs)
    rec_s, fpr_s = accuracy(ours_sample, sample)
    mv_rec, mv_fpr = accuracy(mv, sample)
    pool_rec, pool_fpr = accuracy(pooled, sample)
    print(f"\nsent to math-verify after the fast paths: {n_hard}/{len(pairs)} ({n_hard / len(pairs):.1%}); "
          f"timeouts: {timeouts}\n")
    print("| checker | pairs | checks/s | recall (equiv.) | false-positive rate (perturbed) |")
    print("|---|---|---|---|---|")
    print(f"| mathgenie check_batch, num_workers={args.num_workers}, cold (pool start included) | {len(cold_pairs)} | "
          f"{len(cold_pairs) / cold_s:,.0f} | | |")
    print(f"| mathgenie check_batch, num_workers={args.num_workers}, warm pool | {len(warm_pairs)} | "
          f"{len(warm_pairs) / warm_s:,.0f} | | |")
    print(f"| mathgenie check_batch, all pairs | {len(pairs)} | {len(pairs) / (cold_s + warm_s):,.0f} | "
          f"{rec:.4f} | {fpr:.4f} |")
    print(f"| mathgenie, baseline subsample | {len(sample)} | | {rec_s:.4f} | {fpr_s:.4f} |")
    print(f"| math-verify + guard on the worker pool only (no fast paths), {args.num_workers} workers, cold | "
          f"{len(sample)} | "
          f"{len(sample) / pooled_s:,.0f} | {pool_rec:.4f} | {pool_fpr:.4f} |")
    print(f"| math-verify 0.9 parse+verify, 1 process (baseline) | {len(sample)} | {len(sample) / mv_s:,.0f} | "
          f"{mv_rec:.4f} | {mv_fpr:.4f} |")

    by_kind: dict[str, list] = defaultdict(list)
    for v, p in zip(ours, pairs):
        by_kind[p[3]].append(v)
    mv_kind: dict[str, list] = defaultdict(list)
    for v, p in zip(mv, sample):
        mv_kind[p[3]].append(v)
    print("\n| variant | label | pairs | mathgenie accepts | math-verify accepts (subsample) |")
    print("|---|---|---|---|---|")
    labels = {p[3]: p[2] for p in pairs}
    for kind in sorted(by_kind, key=lambda k: (not labels[k], k)):
        vs, ms = by_kind[kind], mv_kind.get(kind, [])
        mv_txt = f"{sum(ms) / len(ms):.3f} ({len(ms)})" if ms else "-"
        label = "equiv" if labels[kind] else "perturbed"
        print(f"| {kind} | {label} | {len(vs)} | {sum(vs) / len(vs):.3f} | {mv_txt} |")

    wrong = Counter()
    for v, p in zip(ours, pairs):
        if v != p[2]:
            wrong[p[3]] += 1
    examples = [p for v, p in zip(ours, pairs) if v != p[2]][:15]
    if examples:
        print("\nsome disagreements with the constructed label (pred | gold | label | kind):")
        for p in examples:
            print(f"  {p[0]!r} | {p[1]!r} | {p[2]} | {p[3]}")


if __name__ == "__main__":
    main()
