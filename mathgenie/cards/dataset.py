"""The dataset card of a pipeline stage: Hub metadata that makes ``load_dataset(repo, config, revision=...)`` work,
plus rows per config/split/source, lineage, generation parameters, the funnel, licenses and citations."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from huggingface_hub import DatasetCard, DatasetCardData

from mathgenie.cards.common import (
    CITATIONS, KNOWN_SOURCES, PAPER_AUGDATA_ROWS, PAPER_MATHGENIEDATA_ROWS, code_fence, data_metadata, redact,
    scrub_text, size_category, table_cell, tidy_markdown,
)

TEMPLATE = Path(__file__).parent / "templates" / "dataset_card.md.j2"

LINEAGE_COLUMNS = {
    "seed_id": "id of the seed problem the row descends from",
    "source": "seed dataset (gsm8k, math, ...)",
    "round": "augmentation round (1..K) that produced the solution the row descends from",
    "prompt_id": "which rewrite prompt produced that solution",
    "parent_id": "the solution this one rewrites (the seed id for round 1)",
    "augmented_id": "the augmented solution the question was back-translated from",
    "question_id": "the back-translated question",
    "solution_id": "this solution (`{question_id}/s{k}`)",
    "model": "model that wrote the row's new content",
    "revision": "revision (commit) of that model",
    "verifier_model": "model that wrote the verification rationale",
    "verifier_revision": "revision of the verifier model",
}


def _row_counts(configs: Mapping) -> list[dict]:
    rows = []
    for config, dsd in configs.items():
        for split, ds in dsd.items():
            sources = ds["source"] if "source" in ds.column_names and len(ds) else ["-"] * len(ds)
            questions = ds["question"] if "question" in ds.column_names else [None] * len(ds)
            by_source: dict = {}
            for source, question in zip(sources, questions):
                entry = by_source.setdefault(source or "-", [0, set()])
                entry[0] += 1
                if question is not None:
                    entry[1].add(question.strip())
            if not by_source:
                by_source["-"] = [0, set()]
            rows += [{"config": config, "split": split, "source": source, "rows": n,
                      "questions": len(qs) if qs else None}
                     for source, (n, qs) in sorted(by_source.items(), key=lambda kv: str(kv[0]))]
    return rows


def _total_questions(row_counts: list[dict]) -> int | None:
    counts = [r["questions"] for r in row_counts]
    return sum(counts) if all(c is not None for c in counts) else None


def _paper_comparison(stage: str, row_counts: list[dict]) -> list[dict]:
    """Our verified rows beside the paper's AugData (170K: 110K GSM8K, 60K MATH), per seed source."""
    if stage not in ("verified", "decontaminated"):
        return []
    ours: Counter = Counter()
    questions: Counter = Counter()
    for r in row_counts:
        ours[r["source"]] += r["rows"]
        questions[r["source"]] += r["questions"] or 0
    out = [{"source": s, "rows": ours.get(s, 0), "questions": questions.get(s, 0), "paper": n}
           for s, n in PAPER_AUGDATA_ROWS.items()]
    return out + [{"source": "**total**", "rows": sum(ours.values()), "questions": sum(questions.values()),
                   "paper": sum(PAPER_AUGDATA_ROWS.values())}]


def _sources(sources, row_counts: list[dict]) -> list[dict]:
    if sources is None:  # infer from the data's `source` column
        sources = sorted({r["source"] for r in row_counts if r["source"] != "-"})
    if isinstance(sources, Mapping):
        sources = [{"name": k, **v} for k, v in sources.items()]
    out = []
    for s in sources:
        s = {"name": s} if isinstance(s, str) else dict(s)
        known = KNOWN_SOURCES.get(str(s["name"]).lower(), {})
        given = {k: v for k, v in s.items() if v is not None and k != "name"}
        out.append({"license": "unknown", "repo_id": None, "url": None, "revision": None, **known, **given,
                    "name": known.get("name", s["name"])})
    return out


def _params_sections(params: Mapping | None) -> tuple[list, list]:
    """Scalars go in a table; prompts (multi-line strings) and nested values get their own code block."""
    scalars, blocks = [], []
    for key, value in (redact(dict(params)) if params else {}).items():
        if isinstance(value, str) and "\n" in value:
            blocks.append((key, "text", value.strip("\n"), code_fence(value)))
        elif isinstance(value, (dict, list, tuple)):
            body = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=110).strip()
            blocks.append((key, "yaml", body, code_fence(body)))
        else:
            scalars.append((table_cell(key), table_cell(value)))
    return scalars, blocks


def _funnel(funnel) -> tuple[list[dict], str | None]:
    if not funnel:
        return [], None
    plot = None
    if isinstance(funnel, Mapping):
        plot = funnel.get("plot")
        funnel = funnel.get("stages") or []
    rows = []
    for f in funnel:
        rows_in, rows_out = f.get("rows_in"), f.get("rows_out")
        yld = f"{rows_out / rows_in:.1%}" if rows_in and rows_out is not None else "-"
        seconds = f.get("seconds")
        rows.append({"stage": f.get("stage", "?"), "rows_in": _fmt(rows_in), "rows_out": _fmt(rows_out),
                     "yield": yld, "tokens": _fmt(f.get("tokens")),
                     "seconds": f"{seconds:,.1f}" if isinstance(seconds, (int, float)) else "-"})
    return rows, str(plot) if plot else None


def _fmt(n) -> str:
    return f"{n:,}" if isinstance(n, int) else ("-" if n is None else str(n))


def _lineage(lineage) -> tuple[str, list[dict]]:
    if lineage is None:
        return "This is the first stage: rows come straight from the seed sources below.", []
    if isinstance(lineage, str):
        return lineage, []
    if isinstance(lineage, Mapping):
        lineage = [lineage]
    upstream = [{"stage": u.get("stage", "-"), "repo_id": u.get("repo_id", "-"), "revision": u.get("revision", "-")}
                for u in lineage]
    text = ("Every row can be traced back to its seed problem through the lineage columns; the upstream datasets are "
            "pinned by revision.")
    return text, upstream


def render_dataset_card(
    *,
    repo_id: str,
    stage: str,
    configs: Mapping,
    description: str | None = None,
    sources=None,
    params: Mapping[str, Any] | None = None,
    lineage=None,
    funnel=None,
    config_hash: str | None = None,
    extra_sections: Mapping[str, str] | None = None,
    revision: str | None = None,
    license: str = "mit",
    pretty_name: str | None = None,
    summary: str | None = None,
    filter_rules: Sequence[str] | None = None,
) -> DatasetCard:
    """Render the card of one stage dataset.

    ``configs``: ``{config_name: DatasetDict}`` as pushed. ``description``: what the rows are (a stage's
    ``description``). ``sources``: seed source names or dicts ``{name, repo_id, revision, license, url}`` (default: the
    values of the ``source`` column). ``params``: generation parameters (prompts, models, revisions, sampling); values
    under secret-looking keys are redacted. ``lineage``: a text, or upstream datasets ``[{stage, repo_id, revision}]``.
    ``funnel``: ``[{stage, rows_in, rows_out, tokens, seconds}]`` or ``{"stages": [...], "plot": "funnel.png"}``.
    ``revision``: the tag used in the loading example. ``filter_rules``: the rules that decided which rows this stage
    kept, one sentence each (from the run's config).
    """
    if not configs:
        raise ValueError("render_dataset_card: `configs` is empty; pass {config_name: DatasetDict}")
    row_counts = _row_counts(configs)
    total = sum(r["rows"] for r in row_counts)
    sources_list = _sources(sources, row_counts)
    lineage_text, upstream = _lineage(lineage)
    columns = list(dict.fromkeys(c for dsd in configs.values() for ds in dsd.values() for c in ds.column_names))
    card_data = _card_data(configs, stage, total, sources_list, upstream, license,
                           pretty_name or f"MathGenie {stage.replace('_', ' ')} data")
    funnel_rows, funnel_plot = _funnel(funnel)
    scalars, blocks = _params_sections(params)
    card = DatasetCard.from_template(
        card_data, template_path=str(TEMPLATE), repo_id=repo_id, stage=stage, stage_description=description or "",
        summary=summary or f"{total:,} rows in {len(configs)} config(s).", first_config=next(iter(configs)),
        config_names=list(configs), revision=revision or "main", config_hash=config_hash, row_counts=row_counts,
        total_rows=total, columns=columns, lineage_text=lineage_text, upstream=upstream,
        lineage_columns=[(c, t) for c, t in LINEAGE_COLUMNS.items() if c in columns], params_scalars=scalars,
        params_blocks=blocks, funnel_rows=funnel_rows, funnel_plot=funnel_plot, license=license,
        total_questions=_total_questions(row_counts), filter_rules=list(filter_rules or []),
        paper_rows=_paper_comparison(stage, row_counts), paper_mathgeniedata=PAPER_MATHGENIEDATA_ROWS,
        sources=sources_list, extra_sections=list((extra_sections or {}).items()), citations=_citations(sources_list))
    return DatasetCard(tidy_markdown(scrub_text(str(card))))


def _card_data(configs, stage, total, sources_list, upstream, license, pretty_name) -> DatasetCardData:
    configs_yaml, infos_yaml = data_metadata(configs)
    return DatasetCardData(
        pretty_name=pretty_name, license=license, language=["en"],
        task_categories=["text-generation", "question-answering"], size_categories=[size_category(total)],
        source_datasets=sorted({s["repo_id"] for s in sources_list if s.get("repo_id")}
                               | {u["repo_id"] for u in upstream if u["repo_id"] != "-"}),
        tags=["math", "synthetic", "mathgenie", stage.replace("_", "-")], configs=configs_yaml,
        dataset_info=infos_yaml)


def _citations(sources_list) -> list[str]:
    citations = [CITATIONS["MathGenie"], CITATIONS["MathCoder"]]
    citations += [CITATIONS[s["name"]] for s in sources_list if s["name"] in CITATIONS and CITATIONS[s["name"]]
                  not in citations]
    for name in ("GSM8K", "MATH"):  # the method's seeds, cited even when this stage only kept one of them
        if CITATIONS[name] not in citations:
            citations.append(CITATIONS[name])
    return citations
