"""Write evaluation results into a model repo's card: ``model-index`` entries (one per benchmark, per decoding mode)
and an "Evaluation" section with the full table (MATH by subject and level), pushed as one new commit.

Entries of an earlier run with the same benchmark, split and ``metric_name`` (which names the decoding mode) are
replaced; others are kept, so greedy, maj@k and verified-inference results live side by side.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from mathgenie.cards.common import paper_accuracy_note, scrub_text
from mathgenie.evaluation.benchmarks import BENCHMARKS

logger = logging.getLogger(__name__)

SCORER_NAMES = {"math-verify": "math-verify", "mathcoder": "MathCoder's scorer"}

SECTION_START, SECTION_END = "<!-- mathgenie-eval:start -->", "<!-- mathgenie-eval:end -->"


# The model-index name of each scorer's accuracy: math-verify's keeps the plain name earlier runs used.
_SCORER_SUFFIX = {"math-verify": "", "mathcoder": ", MathCoder scorer"}


def eval_results(run, cfg) -> list[EvalResult]:
    """One `EvalResult` per benchmark of ``run`` and scorer (accuracy in %): math-verify's and MathCoder's (the
    harness of the paper's numbers), whichever is the run's headline scorer."""
    by_scorer = run.scores_by_scorer or {cfg.scorer: run.scores}
    return [r for scorer, scores in by_scorer.items() for r in _scorer_results(scores, cfg, _SCORER_SUFFIX[scorer])]


def _scorer_results(scores, cfg, suffix: str) -> list[EvalResult]:
    results = []
    for name, s in scores.items():
        spec = BENCHMARKS[name]
        on_hub = not spec.source.startswith(("http://", "https://"))
        limited = cfg.limit is not None
        results.append(EvalResult(
            task_type="text-generation",
            task_name="Mathematical reasoning",
            dataset_type=spec.source if on_hub else name,
            dataset_name=spec.title,
            dataset_config=spec.configs[0] if on_hub and len(spec.configs) == 1 else None,
            dataset_split="test",
            dataset_args={"limit": cfg.limit, "questions": s.total} if limited else None,
            metric_type="accuracy",
            metric_name=f"accuracy ({cfg.mode}" + (f", first {cfg.limit}" if limited else "") + suffix + ")",
            metric_value=round(100 * s.accuracy, 2),
        ))
    return results


def _key(r: EvalResult) -> tuple:
    return (r.dataset_type, r.dataset_config, r.dataset_split, r.metric_type, r.metric_name)


def merge_results(old: list[EvalResult] | None, new: list[EvalResult]) -> list[EvalResult]:
    replaced = {_key(r) for r in new}
    return [r for r in (old or []) if _key(r) not in replaced] + list(new)


def evaluation_section(run, cfg) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    revision = run.results.get("resolved_revision") or cfg.revision or "main"
    lines = [
        SECTION_START,
        "## Evaluation (`mathgenie eval`)",
        "",
        f"Revision `{revision}`, {cfg.mode} decoding, MathCoder's LCE harness (code executed between blocks; at most "
        f"{cfg.max_blocks} blocks of {cfg.max_tokens} tokens), {when}. Accuracy = correct / all questions"
        + (f"; **first {cfg.limit} questions of each benchmark only**" if cfg.limit else "") + ".",
        "",
        f"Scored by {SCORER_NAMES[cfg.scorer]}. The last table scores the same predictions both ways: "
        "math-verify on the extracted final answer (symbolic equivalence, relative numeric guard), and MathCoder's "
        "`find_math_answer`/`is_equal` on the solution's last block (its extraction and unit stripping, absolute "
        "tolerance 0.01), the harness the MathGenie paper's numbers come from.",
        "",
        run.table,
        "",
        *([paper_accuracy_note(run.scores), ""] if paper_accuracy_note(run.scores) else []),
        f"Reproduce: `mathgenie eval --model {cfg.model}" + (f" --revision {cfg.revision}" if cfg.revision else "")
        + f" --benchmarks {','.join(cfg.benchmarks)}" + (f" --limit {cfg.limit}" if cfg.limit else "")
        + (f" --n {cfg.n} --temperature {cfg.temperature}" if cfg.n > 1 else "")
        + (f" --verify-rounds {cfg.verify_rounds}" if cfg.verify_rounds else "")
        + (f" --scorer {cfg.scorer}" if cfg.scorer != "math-verify" else "") + "`",
        SECTION_END,
    ]
    return "\n".join(lines)


def _with_section(text: str, section: str) -> str:
    """``text`` with ``section`` in place of an earlier one (between the markers), else in place of a plain
    "## Evaluation" section (the training card's placeholder), else before "## Citation", else at the end."""
    marked = re.compile(re.escape(SECTION_START) + ".*?" + re.escape(SECTION_END), re.DOTALL)
    if marked.search(text):
        return marked.sub(lambda _: section, text, count=1)
    plain = re.compile(r"^## Evaluation\b.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if plain.search(text):
        return plain.sub(lambda _: section + "\n\n", text, count=1)
    citation = re.search(r"^## Citation\b", text, re.MULTILINE)
    if citation:
        return text[: citation.start()] + section + "\n\n" + text[citation.start():]
    return text.rstrip() + "\n\n" + section + "\n"


def update_card(card: ModelCard, run, cfg, repo_id: str) -> ModelCard:
    """A copy of ``card`` with the results merged into its ``model-index`` and its Evaluation section replaced."""
    new = ModelCard(str(card))
    new.data.model_name = new.data.model_name or repo_id.split("/")[-1]
    new.data.eval_results = merge_results(new.data.eval_results, eval_results(run, cfg))
    new.text = _with_section(new.text, evaluation_section(run, cfg))
    return ModelCard(scrub_text(str(new)))


def push_results(repo_id: str, run, cfg, *, branch: str = "main", token: str | None = None) -> str:
    """Update ``repo_id``'s card on ``branch`` with ``run``'s results as one commit on top of the head it was read
    at (a concurrent change makes the commit fail instead of being overwritten). Returns the commit sha."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    api = HfApi(token=token)
    head = api.repo_info(repo_id, revision=branch).sha
    try:
        card = ModelCard.load(hf_hub_download(repo_id, "README.md", revision=head, token=token))
    except EntryNotFoundError:
        card = ModelCard(f"---\n{ModelCardData(model_name=repo_id.split('/')[-1]).to_yaml()}\n---\n# "
                         f"{repo_id.split('/')[-1]}\n")
    new = update_card(card, run, cfg, repo_id)
    info = new.push_to_hub(repo_id, token=token, revision=branch, parent_commit=head,
                           commit_message=f"Evaluation results ({cfg.mode}) of {cfg.revision or 'main'}")
    sha = getattr(info, "oid", None) or api.repo_info(repo_id, revision=branch).sha
    logger.info("pushed evaluation results to the card of %s@%s (commit %s)", repo_id, branch, sha)
    return sha
