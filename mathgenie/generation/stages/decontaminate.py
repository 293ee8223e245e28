"""Stage 5: decontamination. Every verified question that overlaps a test question of an eval set is dropped (its
exact normalized text, a shared word 13-gram, or a MinHash near-duplicate: `mathgenie.decontamination`), checked
against the index of GSM8K, MATH, MATH-500, SVAMP, SimulEq and Mathematics that ships with mathgenie. A question's
solution rows go together (grouped by ``question_id``). Duplicates *within* the data are not dropped here: that would
compare rows of different seed families, so shards would no longer add up to the unsharded run.

The funnel counts the drops as ``contaminated``; the manifest and the dataset card name the eval sets checked and the
drops per eval set and rule.
"""

from __future__ import annotations

import datasets

from mathgenie.decontamination import decontaminate, load_index
from mathgenie.generation.config import DecontaminateConfig
from mathgenie.generation.stage import Stage, StageRun
from mathgenie.schema import VERIFIED_FEATURES


def run(ctx: StageRun) -> datasets.Dataset:
    cfg: DecontaminateConfig = ctx.config
    ctx.stats.rows_in += len(ctx.rows)
    if not cfg.eval_sets:
        ctx.report["decontamination"] = {"eval_sets": {}, "dropped": {}, "by_eval_set": {}, "params": {}}
        ctx.stats.rows_out += len(ctx.rows)
        return ctx.rows
    index = load_index(cfg.index).select(cfg.eval_sets, minhash=cfg.minhash)
    kept, report = decontaminate(ctx.rows, eval_sets=index, dedup_within=False, group_column="question_id")
    ctx.stats.drop("contaminated", report.rows - report.kept)
    ctx.stats.rows_out += report.kept
    ctx.report["decontamination"] = {"eval_sets": index.sizes, "dropped": report.dropped,
                                     "by_eval_set": report.by_eval_set, "params": index.params()}
    return kept


def card_section(reports: list[dict]) -> dict[str, str]:
    """The card's decontamination section from the shards' reports: what was checked and what was dropped."""
    if not reports:
        return {}
    first = reports[0]["decontamination"]
    dropped = {k: sum(r["decontamination"]["dropped"].get(k, 0) for r in reports) for k in first["dropped"]}
    by_set = {k: sum(r["decontamination"]["by_eval_set"].get(k, 0) for r in reports) for k in first["eval_sets"]}
    if not first["eval_sets"]:
        return {"Decontamination": "Not checked against any eval set (`decontaminate.eval_sets: []`)."}
    p = first["params"]
    lines = [f"dropped_contaminated: {sum(dropped.values())} rows", "",
             "| eval set | test questions checked | rows dropped |", "|---|---:|---:|"]
    lines += [f"| {name} | {n} | {by_set[name]} |" for name, n in first["eval_sets"].items()]
    lines += ["", "| rule | rows dropped |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in dropped.items()]
    lines += ["", f"Rules: the normalized question equals an eval question, shares a word {p['ngram']}-gram with one"
              + (f", or is a MinHash near-duplicate (Jaccard >= {p['minhash_threshold']}, {p['num_perm']} "
                 f"permutations, word {p['shingle_words']}-gram shingles)" if p.get("minhash_threshold") else "")
              + ". The index holds hashes of the test questions (`mathgenie/decontamination/data/README.md`)."]
    return {"Decontamination": "\n".join(lines)}


STAGE = Stage(
    name="decontaminate", input="verify", output="decontaminated", features=VERIFIED_FEATURES,
    config_class=DecontaminateConfig, run=run, push_name="mathgenie-verified", card_section=card_section,
    description="Verified rows, by the filter rules of this run listed below, whose questions do not overlap the "
                "test questions of the eval sets named below.")
