"""The model card of a MathGenieLM checkpoint: base model, training datasets pinned by revision, hyper-parameters,
training loss and a ``model-index`` that evaluation fills in."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from mathgenie.cards.common import CITATIONS, redact, scrub_text, table_cell, tidy_markdown

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md.j2"
_MAX_LOSS_ROWS = 20


def _dataset_refs(datasets: Sequence) -> list[dict]:
    """``"org/name"``, ``"org/name@rev"`` or ``{repo_id, revision, config}`` → dicts."""
    out = []
    for d in datasets:
        if isinstance(d, str):
            repo_id, _, revision = d.partition("@")
            d = {"repo_id": repo_id, "revision": revision or None}
        d = {"revision": None, "config": None, **d}
        if not d.get("repo_id"):
            raise ValueError(f"render_model_card: dataset {d!r} has no repo_id")
        d["url"] = f"https://huggingface.co/datasets/{d['repo_id']}"
        d["revision"] = d["revision"] or "main"
        out.append(d)
    return out


def _eval_results(eval_results) -> list[EvalResult]:
    results = []
    for r in eval_results or []:
        if isinstance(r, Mapping):
            r = EvalResult(**{"task_type": "text-generation", **r})
        if not isinstance(r, EvalResult):
            raise TypeError(f"render_model_card: eval result {r!r} must be a dict or huggingface_hub.EvalResult")
        results.append(r)
    return results


def _loss_curve(points) -> list[tuple[int, float]]:
    """At most ``_MAX_LOSS_ROWS`` evenly spaced ``(step, loss)`` points, the last one always kept."""
    points = [(int(s), float(v)) for s, v in (points or [])]
    if len(points) <= _MAX_LOSS_ROWS:
        return points
    stride = len(points) / (_MAX_LOSS_ROWS - 1)
    picked = [points[int(i * stride)] for i in range(_MAX_LOSS_ROWS - 1)]
    return picked + [points[-1]]


def render_model_card(
    *,
    repo_id: str,
    base_model: str,
    datasets: Sequence,
    hyperparameters: Mapping[str, Any],
    train_summary: Mapping[str, Any] | None = None,
    eval_results=None,
    tags: Sequence[str] | None = None,
    revision: str | None = None,
    license: str | None = None,
    summary: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Render a model card. ``datasets``: ``"org/name@revision"`` strings or ``{repo_id, revision, config}``.
    ``train_summary``: scalars (train_loss, steps, runtime_s, ...) and an optional ``loss_curve`` of
    ``(step, loss)``. ``eval_results``: dicts of `huggingface_hub.EvalResult` fields (``dataset_type``,
    ``dataset_name``, ``metric_type``, ``metric_value``, ...) or EvalResult objects; they become ``model-index``.
    ``metadata``: extra keys of the YAML header (e.g. ``mathgenie_prompt``, the prompt format a model was trained
    with)."""
    refs = _dataset_refs(datasets)
    results = _eval_results(eval_results)
    model_name = repo_id.split("/")[-1]
    card_data = ModelCardData(
        base_model=base_model,
        datasets=list(dict.fromkeys(d["repo_id"] for d in refs)),
        library_name="transformers",
        pipeline_tag="text-generation",
        license=license,
        language=["en"],
        tags=list(dict.fromkeys(["mathgenie", "math", "code-integrated-reasoning", "trl", "sft", *(tags or [])])),
        model_name=model_name,
        eval_results=results,
        **dict(metadata or {}),
    )
    summary_items = dict(redact(dict(train_summary or {})))
    curve = _loss_curve(summary_items.pop("loss_curve", None))
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        repo_id=repo_id,
        model_name=model_name,
        base_model=base_model,
        revision=revision or "main",
        summary=summary or f"Fine-tuned from `{base_model}` on {len(refs)} dataset(s).",
        datasets=refs,
        hyperparameters=[(table_cell(k), table_cell(v)) for k, v in sorted(redact(dict(hyperparameters)).items())],
        train_rows=[(table_cell(k), f"{v:.4g}" if isinstance(v, float) else table_cell(v))
                    for k, v in summary_items.items()],
        loss_curve=curve,
        eval_rows=[{"dataset": r.dataset_name, "split": r.dataset_split or "-", "metric": r.metric_name or
                    r.metric_type, "value": r.metric_value} for r in results],
        citations=[CITATIONS["MathGenie"], CITATIONS["MathCoder"], CITATIONS["GSM8K"], CITATIONS["MATH"]],
    )
    return ModelCard(tidy_markdown(scrub_text(str(card))))
