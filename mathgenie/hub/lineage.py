"""Lineage links between the pipeline's stage repos (``org/mathgenie-{seed,augmented,back-translated,solved,
verified}``): which stage a repo holds, and for a row, links to the rows it descends from.

Links are lazy: ``/datasets/{repo}/find?column=C&value=V`` finds the row when clicked, so a page of rows costs no
lookups in other repos. ``follow=F`` hops once more: from the found row to the row its column ``F`` names (a verified
row knows its question id; the question's row knows the augmented solution it was written from).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

STAGES = ("seed", "augmented", "back_translated", "solved", "verified")
ROW_ID = {"seed": "id", "augmented": "id", "back_translated": "question_id", "solved": "solution_id",
          "verified": "solution_id"}  # the column that names a stage's row
POINTS_TO = {"seed_id": "seed", "question_id": "back_translated", "augmented_id": "augmented",
             "parent_id": "augmented", "solution_id": "solved"}  # lineage column -> the stage whose row it names
LABELS = {"seed_id": "seed problem", "question_id": "question", "augmented_id": "augmented solution",
          "parent_id": "parent solution", "solution_id": "solution"}


def stage_of(card: dict | None, repo_name: str, columns=()) -> str | None:
    """The stage a dataset repo holds: the card's stage tag (as cards.render_dataset_card writes it), else the
    repo name's suffix, else the columns."""
    tags = (card or {}).get("tags") or []
    tags = tags if isinstance(tags, list) else [tags]
    for stage in STAGES:
        if stage.replace("_", "-") in tags and "mathgenie" in tags:
            return stage
    for stage in STAGES:
        if repo_name.endswith("-" + stage.replace("_", "-")):
            return stage
    columns = set(columns)
    for stage, marker in (("verified", "verdict"), ("solved", "blocks"), ("back_translated", "augmented_id"),
                          ("augmented", "parent_id")):
        if marker in columns:
            return stage
    return "seed" if {"id", "question", "solution", "answer"} <= columns else None


def target(column: str, row: dict) -> str | None:
    """The stage whose row ``row[column]`` names; a round-1 ``parent_id`` is the seed itself."""
    if column == "parent_id" and row.get("parent_id") == row.get("seed_id"):
        return "seed"
    return POINTS_TO.get(column)


@dataclass
class Link:
    label: str
    value: str
    stage: str  # the stage the link lands in
    url: str | None  # None when no repo of that stage is on this hub


def find_url(repo_id: str, column: str, value: str, follow: str | None = None) -> str:
    query = {"column": column, "value": value, **({"follow": follow} if follow else {})}
    return f"/datasets/{repo_id}/find?{urlencode(query)}"


def row_links(stage: str | None, row: dict, repo_for) -> list[Link]:
    """Links from ``row`` (of a ``stage`` repo) to its ancestors. ``repo_for(stage)``: a repo id or None."""
    links = []
    for column in ("question_id", "augmented_id", "parent_id", "seed_id", "solution_id"):
        to, value = target(column, row), row.get(column)
        if to is None or to == stage or not isinstance(value, str) or not value:
            continue
        if column == "seed_id" and row.get("parent_id") == value:
            continue  # already linked as the parent
        repo = repo_for(to)
        links.append(Link(LABELS[column], value, to, repo and find_url(repo, ROW_ID[to], value)))
        if column == "question_id" and "augmented_id" not in row:  # one hop further, through the question's row
            repo = repo_for("back_translated")
            links.append(Link("augmented solution", value, "augmented",
                              repo and find_url(repo, "question_id", value, follow="augmented_id")))
    return links
