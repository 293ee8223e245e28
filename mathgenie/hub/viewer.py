"""The local hub's pages, for people: ``/`` (repos, with search), ``/datasets/ORG/NAME`` and ``/models/ORG/NAME``
(card, data, files, branches and tags, commits, the funnel plot), ``/datasets/ORG/NAME/viewer/CONFIG/SPLIT`` (rows,
a page at a time; LCE solutions as text, code and execution blocks; lineage links across the stage repos) and
``/datasets/ORG/NAME/find`` (where lineage links land). Server-rendered with jinja2; no script, no build step.
"""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import quote, urlencode

import jinja2
from markdown_it import MarkdownIt
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from mathgenie.hub import lineage
from mathgenie.hub.dataset_api import ENDPOINTS, DatasetViewerAPI, open_revision
from mathgenie.hub.files import URL_PREFIX
from mathgenie.hub.metadata import card_body
from mathgenie.hub.store import DEFAULT_BRANCH, StoreError, valid_repo_id
from mathgenie.hub.validate import jsonable

PAGE_LENGTH = 20
MAX_PAGE_LENGTH = 100
_TYPES = {"datasets": "dataset", "models": "model"}
_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                          autoescape=True, trim_blocks=True, lstrip_blocks=True)
_ENV.filters["urlquote"] = lambda s: quote(str(s), safe="")
_ENV.filters["filesize"] = lambda n: next(f"{n / 1024 ** i:,.1f} {u}".replace(".0 B", " B") for i, u in
                                          enumerate(["B", "KB", "MB", "GB", "TB"]) if n < 1024 ** (i + 1) or i == 4)


def _html(template: str, http_status: int = 200, **context) -> HTMLResponse:
    return HTMLResponse(_ENV.get_template(template).render(**context), status_code=http_status)


@functools.lru_cache(maxsize=256)
def _markdown(text: str, file_base: str) -> str:
    """The card's markdown as HTML: raw HTML in the card is shown as text; relative images load from the repo."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    default_image = md.renderer.rules.get("image")

    def image(renderer, tokens, idx, options, env):
        src = tokens[idx].attrGet("src") or ""
        if "://" not in src and not src.startswith("/"):
            tokens[idx].attrSet("src", file_base + quote(src))
        return default_image(tokens, idx, options, env)

    md.add_render_rule("image", image)
    return md.render(text)


class Viewer:
    def __init__(self, hub):
        self.hub = hub
        self.api = DatasetViewerAPI(hub)

    def route(self, request: Request, segs: list[str]) -> Response | None:
        """The page for ``segs``, or None when the path is not a page (the hub answers it as an API path)."""
        if len(segs) == 1 and segs[0] in ENDPOINTS:
            return self.api.handle(request, segs[0])
        try:
            if segs == [""]:
                return self.index(request)
            if len(segs) >= 3 and segs[0] in _TYPES:
                repo_type, repo_id, rest = _TYPES[segs[0]], f"{segs[1]}/{segs[2]}", segs[3:]
                if not valid_repo_id(repo_id):
                    return None
                if not rest:
                    return self.repo_page(request, repo_type, repo_id)
                if repo_type == "dataset" and rest[0] == "viewer" and len(rest) in (1, 3):
                    return self.rows_page(request, repo_id, *rest[1:])
                if repo_type == "dataset" and rest == ["find"]:
                    return self.find(request, repo_id)
        except StoreError as e:
            return _html("error.html.j2", e.status, status=e.status, message=e.message)
        return None

    # -- pages -------------------------------------------------------------------------------------------------------
    def index(self, request: Request) -> Response:
        search = request.query_params.get("search", "").strip()
        sections = []
        for repo_type, title in (("dataset", "Datasets"), ("model", "Models")):
            repos = []
            for repo in self.hub.store.list_repos(repo_type):
                if repo.private and not self.hub._authorized(request):
                    continue
                commit = repo.commit(repo.head(DEFAULT_BRANCH))
                tags = (self.hub._card_data(commit["tree"]) or {}).get("tags") or []
                tags = [str(t) for t in (tags if isinstance(tags, list) else [tags])]
                if search and not any(search.lower() in s.lower() for s in [repo.id, *tags]):
                    continue
                repos.append({"id": repo.id, "url": _page_url(repo_type, repo.id), "date": commit["date"][:10],
                              "tags": tags, "private": repo.private})
            sections.append({"title": title, "repos": sorted(repos, key=lambda r: r["id"])})
        return _html("index.html.j2", search=search, sections=sections)

    def repo_page(self, request: Request, repo_type: str, repo_id: str) -> Response:
        rev = request.query_params.get("revision") or DEFAULT_BRANCH
        revision = open_revision(self.hub, request, repo_type, repo_id, rev)
        tree, files_base = revision.tree, _file_url(repo_type, repo_id, revision.sha, "")
        refs = revision.repo.refs()
        readme = tree.get("README.md")
        card_html = ""
        if readme is not None:
            text = self.hub.store.blobs.path(readme["sha256"]).read_text(encoding="utf-8", errors="replace")
            card_html = _markdown(card_body(text), files_base)
        commits = [{"id": c["id"], "title": c["title"], "date": c["date"][:19].replace("T", " ")}
                   for _, c in zip(range(50), revision.repo.history(revision.sha))]
        return _html("repo.html.j2", repo_type=repo_type, repo_id=repo_id, revision=revision, card_html=card_html,
                     page_url=_page_url(repo_type, repo_id), files_base=files_base,
                     files=[{"path": p, **e} for p, e in sorted(tree.items())],
                     branches=sorted(refs["branches"].items()),
                     tags=sorted((n, t["commit"]) for n, t in refs["tags"].items()), commits=commits,
                     funnel=files_base + "funnel.png" if "funnel.png" in tree else None,
                     splits=[{"config": s.config, "name": s.name, "rows": s.num_rows, "size": s.num_bytes,
                              "files": len(s.shards), "url": _rows_url(repo_id, s.config, s.name, rev)}
                             for s in revision.splits],
                     card_meta=revision.card or {}, stage=lineage.stage_of(revision.card, repo_id.split("/")[1]))

    def rows_page(self, request: Request, repo_id: str, config: str | None = None, split: str | None = None):
        params = request.query_params
        rev = params.get("revision") or DEFAULT_BRANCH
        revision = open_revision(self.hub, request, "dataset", repo_id, rev)
        if config is None:
            if not revision.splits:
                raise StoreError(404, f"{repo_id} at {rev} has no parquet files to show")
            first = revision.splits[0]
            return RedirectResponse(_rows_url(repo_id, first.config, first.name, rev), 302)
        split_obj = revision.split(config, split)
        offset, length = _page_params(params)
        total = split_obj.num_rows
        offset = min(offset, max(total - 1, 0))
        table = split_obj.read(offset, length)
        stage = lineage.stage_of(revision.card, repo_id.split("/")[1], table.column_names)
        repo_for = functools.lru_cache(maxsize=None)(lambda s: self.stage_repo(request, repo_id.split("/")[0], s))
        highlight = params.get("highlight")
        rows = [_row_view(offset + i, row, stage, repo_for, highlight) for i, row in enumerate(table.to_pylist())]
        base = _rows_url(repo_id, config, split, rev)

        def page(o: int) -> str:
            return f"{base}&{urlencode({'offset': o, 'length': length})}"

        pages = {"prev": page(max(offset - length, 0)) if offset > 0 else None,
                 "next": page(offset + length) if offset + length < total else None,
                 "first": page(0), "last": page(max((total - 1) // length * length, 0))}
        return _html("rows.html.j2", repo_id=repo_id, revision=revision, split=split_obj, rows=rows, total=total,
                     offset=offset, length=length, pages=pages, stage=stage, page_url=_page_url("dataset", repo_id),
                     splits=[(s, _rows_url(repo_id, s.config, s.name, rev)) for s in revision.splits])

    def find(self, request: Request, repo_id: str) -> Response:
        """Where a lineage link lands: the page of the row whose ``column`` is ``value`` (or, with ``follow``, the
        row that the found row's ``follow`` column names, in its own stage's repo)."""
        params = request.query_params
        column, value, follow = params.get("column", ""), params.get("value", ""), params.get("follow")
        revision = open_revision(self.hub, request, "dataset", repo_id, params.get("revision"))
        for s in revision.splits:
            idx = s.find(column, value)
            if idx is None:
                continue
            if follow:
                row = jsonable(s.read(idx, 1).to_pylist()[0])
                to = lineage.target(follow, row)
                repo = to and self.stage_repo(request, repo_id.split("/")[0], to)
                if not repo or not isinstance(row.get(follow), str):
                    raise StoreError(404, f"row {idx} of {repo_id} has no {follow!r} link on this hub")
                return RedirectResponse(lineage.find_url(repo, lineage.ROW_ID[to], row[follow]), 302)
            offset = idx // PAGE_LENGTH * PAGE_LENGTH
            url = _rows_url(repo_id, s.config, s.name, revision.rev)
            return RedirectResponse(f"{url}&offset={offset}&highlight={idx}#row-{idx}", 302)
        raise StoreError(404, f"no row of {repo_id} has {column} = {value!r}")

    # -- lineage -------------------------------------------------------------------------------------------------------
    def stage_repo(self, request: Request, namespace: str, stage: str) -> str | None:
        """The dataset repo holding ``stage``: in ``namespace`` if there is one, else anywhere on this hub."""
        found = []
        for repo in self.hub.store.list_repos("dataset"):
            if repo.private and not self.hub._authorized(request):
                continue
            head = repo.head(DEFAULT_BRANCH)
            if _cached_stage(self.hub, repo.id, head) == stage:
                found.append(repo.id)
        found.sort(key=lambda r: (r.split("/")[0] != namespace, r))
        return found[0] if found else None


@functools.lru_cache(maxsize=4096)
def _cached_stage(hub, repo_id: str, head: str) -> str | None:  # a commit never changes: cache by its sha
    repo = hub.store.repo("dataset", repo_id)
    return lineage.stage_of(hub._card_data(repo.commit(head)["tree"]), repo_id.split("/")[1]) if repo else None


def _page_params(params) -> tuple[int, int]:
    def number(name: str, default: int, high: int) -> int:
        raw = params.get(name, "")
        if raw == "":
            return default
        if not raw.isdigit() or int(raw) > high:
            raise StoreError(400, f"'{name}' must be a whole number up to {high:,}, got {raw[:40]!r}")
        return int(raw)

    return number("offset", 0, 10**12), max(number("length", PAGE_LENGTH, MAX_PAGE_LENGTH), 1)


def _page_url(repo_type: str, repo_id: str) -> str:
    return f"/{repo_type}s/{repo_id}"


def _file_url(repo_type: str, repo_id: str, sha: str, path: str) -> str:
    return f"/{URL_PREFIX[repo_type]}{repo_id}/resolve/{sha}/{quote(path)}"


def _rows_url(repo_id: str, config: str, split: str, rev: str) -> str:
    return f"/datasets/{repo_id}/viewer/{quote(config, safe='')}/{quote(split, safe='')}?{urlencode({'revision': rev})}"


def _is_blocks(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(b, dict) and b.get("type") in ("text", "code", "execution") and isinstance(b.get("content"), str)
        for b in value)


def _lce_blocks(value):
    """LCE blocks of a cell: a list of ``{type, content}``, or a string in LCE tokens; None for anything else."""
    if _is_blocks(value):
        return value
    if isinstance(value, str) and value.startswith(("<|text|>", "<|code|>", "<|execution|>")):
        from mathgenie.schema import LCEFormatError, parse_blocks

        try:
            return parse_blocks(value, allow_partial=True)
        except LCEFormatError:
            return None
    return None


def _row_view(idx: int, row: dict, stage, repo_for, highlight) -> dict:
    row = jsonable(row)
    fields = []
    for name, value in row.items():
        blocks = _lce_blocks(value)
        if blocks is not None:
            fields.append({"name": name, "kind": "lce", "blocks": blocks})
        elif isinstance(value, str) and (len(value) > 80 or "\n" in value):
            fields.append({"name": name, "kind": "long", "value": value})
        elif isinstance(value, (dict, list)):
            fields.append({"name": name, "kind": "long", "value": _json_text(value)})
        else:
            fields.append({"name": name, "kind": "short", "value": "null" if value is None else value})
    return {"idx": idx, "fields": fields, "links": lineage.row_links(stage, row, repo_for),
            "highlight": highlight == str(idx)}


def _json_text(value) -> str:
    import json

    return json.dumps(value, indent=1, ensure_ascii=False)
