"""The filter rules a stage applied, in words, from the run's own config: what a dataset card states about which rows
were kept (so a card never says "majority" when the run was unanimous, or hides that ``unknown`` verdicts were kept).

``filter_rules(config, stage)`` is the one entry; a stage without filters has no rules.
"""

from __future__ import annotations

from mathgenie.generation.config import PipelineConfig

_CONSISTENCY = {
    "unanimous": "Answer consistency (unanimous, the paper's rule): a question is dropped unless all of its {n} "
                 "solutions reach the same final answer (equivalent answers agree; a solution without an answer "
                 "agrees with nothing).",
    "majority": "Answer consistency (majority): a question keeps only the solutions with its most common final "
                "answer, and only when more than half of its {n} solutions reach it; otherwise it is dropped.",
    "none": "Answer consistency: off (solutions are kept whatever the other solutions of their question answer).",
}


def verify_rules(cfg: PipelineConfig) -> list[str]:
    v = cfg.verify
    rules = [_CONSISTENCY[v.consistency].format(n=cfg.solve.n)]
    if v.rationale:
        rules.append(f"Verification rationale: on. The verifier writes a code-integrated rationale for each remaining "
                     f"solution (MathGenie Table 10 prompt) and its verdict is read by the `{v.verdict_rule}` rule; "
                     f"solutions judged `wrong` are dropped.")
        rules.append("Solutions whose verdict is `unknown` (the rationale concluded neither way) are "
                     + ("**kept**, as in the paper, which discards only solutions verified as wrong."
                        if v.keep_unknown else "**dropped**."))
    else:
        rules.append("Verification rationale: off (no verifier ran; every row's verdict is `unknown`).")
    return rules


def back_translate_rules(cfg: PipelineConfig) -> list[str]:
    b = cfg.back_translate
    rules = [f"A question is dropped when it is shorter than {b.min_chars} or longer than {b.max_chars} characters, "
             "cut at max_tokens, made of repeated lines, equal to its source solution, or an exact duplicate of an "
             "earlier question of the same seed."]
    if b.require_question_cue:
        rules.append("A question must ask something: a `?` or a word like find/compute/what/how.")
    return rules


def augment_rules(cfg: PipelineConfig) -> list[str]:
    a = cfg.augment
    dedup = ("exact duplicates (after whitespace/case normalization)" if a.dedup_threshold >= 1 else
             f"near duplicates (word 3-gram Jaccard >= {a.dedup_threshold}) and exact duplicates")
    return [f"Within a seed's family, {dedup} of the seed or of an earlier kept solution are dropped, as are outputs "
            f"shorter than {a.min_chars} characters and outputs cut at max_tokens."]


def decontaminate_rules(cfg: PipelineConfig) -> list[str]:
    """The verified dataset is the decontaminated stage: the verification rules, then the eval-set check."""
    d = cfg.decontaminate
    if not d.eval_sets:
        return verify_rules(cfg) + ["Decontamination: off (no eval set checked)."]
    near = ", or a MinHash near-duplicate (Jaccard >= 0.8 over word 5-grams)" if d.minhash else ""
    index = d.index or "the index shipped with mathgenie"
    return verify_rules(cfg) + [f"Decontamination: a question is dropped when it matches a test question of "
                                f"{', '.join(d.eval_sets)} by exact text, a shared word 13-gram{near} ({index})."]


RULES = {"augment": augment_rules, "back_translate": back_translate_rules, "verify": verify_rules,
         "decontaminate": decontaminate_rules}


def filter_rules(cfg: PipelineConfig, stage: str) -> list[str]:
    fn = RULES.get(stage)
    return fn(cfg) if fn is not None else []
