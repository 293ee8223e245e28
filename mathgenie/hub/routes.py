"""URL routing of the local hub (`mathgenie.hub.server.HubApp`): which Hub API path and method reaches which
endpoint method. Kept apart from the endpoints so each reads on its own."""

from __future__ import annotations

import json
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from mathgenie.hub.files import json_response
from mathgenie.hub.store import DEFAULT_BRANCH, StoreError

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


async def _json_body(request: Request) -> dict:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(400, f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise StoreError(400, f"request body must be a JSON object, got {type(body).__name__}")
    return body



class Routes:
    """Routing of `HubApp` (a mixin: the endpoint methods live on the app)."""

    async def _route(self, request: Request, method: str, segs: list[str]) -> Response:
        sync = run_in_threadpool
        if segs[0] == "api" and len(segs) >= 2:
            head = segs[1]
            if head == "whoami-v2" and method == "GET":
                return self.whoami(request)
            if head == "validate-yaml" and method == "POST":
                body = await _json_body(request)
                return self.validate_yaml(body)
            if head == "repos" and len(segs) == 3:
                body = await _json_body(request)
                if segs[2] == "create" and method == "POST":
                    return await sync(self.create_repo, request, body)
                if segs[2] == "delete" and method == "DELETE":
                    return await sync(self.delete_repo, request, body)
            if head in _TYPES:
                repo_type = _TYPES[head]
                if len(segs) == 2 and method == "GET":
                    return await sync(self.list_repos, request, repo_type)
                if len(segs) < 4:
                    raise StoreError(404, f"Repository Not Found: {'/'.join(segs[2:])!r} (repo ids are "
                                          "'namespace/name')", "RepoNotFound")
                repo_id = f"{unquote(segs[2])}/{unquote(segs[3])}"
                action, rest = (segs[4] if len(segs) > 4 else ""), [unquote(s) for s in segs[5:]]
                return await self._route_repo(request, method, repo_type, repo_id, action, rest)
        if segs[0] == "_lfs" and len(segs) == 3:
            if segs[1] == "upload" and method == "PUT":
                return await self.lfs_upload(request, segs[2])
            if segs[1] == "verify" and method == "POST":
                return self.lfs_verify(await _json_body(request))
        repo_type, s = "model", segs
        if s[0] in _TYPES and s[0] != "models":
            repo_type, s = _TYPES[s[0]], s[1:]
        if len(s) == 6 and s[1].endswith(".git") and s[2:] == ["info", "lfs", "objects", "batch"] and method == "POST":
            repo_id = f"{unquote(s[0])}/{unquote(s[1][:-4])}"
            return await sync(self.lfs_batch, request, repo_type, repo_id, await _json_body(request))
        if len(s) >= 5 and s[2] in ("resolve", "raw") and method in ("GET", "HEAD"):
            repo_id = f"{unquote(s[0])}/{unquote(s[1])}"
            path = "/".join(unquote(p) for p in s[4:])
            return await sync(self.resolve, request, repo_type, repo_id, unquote(s[3]), path, s[2] == "raw")
        raise StoreError(404, f"{method} /{'/'.join(segs)} is not an endpoint of this local hub")

    async def _route_repo(self, request, method, repo_type, repo_id, action, rest) -> Response:
        sync = run_in_threadpool
        one = rest[0] if len(rest) == 1 else None
        if method == "GET" and action == "":
            return await sync(self.repo_info, request, repo_type, repo_id, DEFAULT_BRANCH)
        if method == "GET" and action == "revision" and one:
            return await sync(self.repo_info, request, repo_type, repo_id, one)
        if method == "GET" and action == "tree" and rest:
            return await sync(self.tree, request, repo_type, repo_id, rest[0], "/".join(rest[1:]))
        if method == "GET" and action == "refs":
            return await sync(self.refs, request, repo_type, repo_id)
        if method == "GET" and action == "commits" and one:
            return await sync(self.commits, request, repo_type, repo_id, one)
        if method == "GET" and action == "auth-check":
            self._repo(request, repo_type, repo_id)
            return json_response({})
        if method == "POST" and action == "paths-info" and one:
            form = await request.form()
            paths, expand = form.getlist("paths"), _truthy(form.get("expand"))
            return await sync(self.paths_info, request, repo_type, repo_id, one, paths, expand)
        if method == "POST" and action == "preupload" and one:
            return await sync(self.preupload, request, repo_type, repo_id, one, await _json_body(request))
        if method == "POST" and action == "commit" and one:
            if _truthy(request.query_params.get("create_pr")):
                raise StoreError(400, "pull requests are not supported by the local hub; commit to a branch")
            return await sync(self.commit, request, repo_type, repo_id, one, await request.body())
        if action == "branch" and one and method in ("POST", "DELETE"):
            body = await _json_body(request) if method == "POST" else {}
            return await sync(self.branch, request, method, repo_type, repo_id, one, body)
        if action == "tag" and one and method in ("POST", "DELETE"):
            body = await _json_body(request) if method == "POST" else {}
            return await sync(self.tag, request, method, repo_type, repo_id, one, body)
        if action == "settings" and method == "PUT":
            return await sync(self.settings, request, repo_type, repo_id, await _json_body(request))
        if action in ("xet-write-token", "xet-read-token"):
            raise StoreError(501, "this local hub has no Xet storage: set HF_HUB_DISABLE_XET=1 before importing "
                                  "huggingface_hub so uploads use plain LFS")
        raise StoreError(404, f"{method} {action!r} is not an endpoint of this local hub")
