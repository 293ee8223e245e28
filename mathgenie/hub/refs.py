"""The local Hub's branch, tag, tree and commit endpoints, mixed into `mathgenie.hub.server.HubApp`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from mathgenie.hub import tree as trees
from mathgenie.hub.files import json_response
from mathgenie.hub.store import DEFAULT_BRANCH, Repo, StoreError
from mathgenie.hub.validate import get_str, truthy


class RefEndpoints:
    """Needs ``_repo(request, repo_type, repo_id, write=False)`` from the app."""

    def branch(self, request: Request, method: str, repo_type, repo_id, name: str, body: dict) -> Response:
        repo = self._repo(request, repo_type, repo_id, write=True)
        with repo.locked():
            if method == "DELETE":
                repo.delete_branch(name)
            else:
                start = get_str(body, "startingPoint", "create branch", max_len=200) or DEFAULT_BRANCH
                repo.create_branch(name, repo.resolve_or_raise(start))
        return json_response({})

    def tag(self, request: Request, method: str, repo_type, repo_id, rev_or_tag: str, body: dict) -> Response:
        repo = self._repo(request, repo_type, repo_id, write=True)
        with repo.locked():
            if method == "DELETE":
                repo.delete_tag(rev_or_tag)
            else:
                name = get_str(body, "tag", "create tag", required=True, max_len=200)
                message = get_str(body, "message", "create tag")
                repo.create_tag(name, repo.resolve_or_raise(rev_or_tag), message)
        return json_response({})

    # -- listings --------------------------------------------------------------------------------------------------
    def refs(self, request: Request, repo_type: str, repo_id: str) -> Response:
        refs = self._repo(request, repo_type, repo_id).refs()
        out = {"branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": sha}
                            for n, sha in sorted(refs["branches"].items())],
               "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": t["commit"]}
                        for n, t in sorted(refs["tags"].items())],
               "converts": []}
        if truthy(request.query_params.get("include_prs")):
            out["pullRequests"] = []
        return json_response(out)

    def tree(self, request: Request, repo_type: str, repo_id: str, rev: str, path: str) -> Response:
        repo = self._repo(request, repo_type, repo_id)
        sha = repo.resolve_or_raise(rev)
        tree = repo.commit(sha)["tree"]
        entries = trees.list_tree(tree, path, truthy(request.query_params.get("recursive")))
        if entries is None:
            raise StoreError(404, f"{path!r} is not a folder of {repo_id} at {rev}", "EntryNotFound", sha)
        if truthy(request.query_params.get("expand")):
            self._add_last_commits(repo, sha, entries)
        return json_response(entries)

    def paths_info(self, request, repo_type, repo_id, rev, paths, expand) -> Response:
        repo = self._repo(request, repo_type, repo_id)
        sha = repo.resolve_or_raise(rev)
        entries = trees.paths_info(repo.commit(sha)["tree"], paths)
        if expand:
            self._add_last_commits(repo, sha, entries)
        return json_response(entries)

    def _add_last_commits(self, repo: Repo, sha: str, entries: list[dict]) -> None:
        files = {e["path"] for e in entries if e["type"] == "file"}
        found = trees.last_commits(repo.history(sha), files)
        for e in entries:
            if e["path"] in found:
                e["lastCommit"] = found[e["path"]]

    def commits(self, request: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        repo = self._repo(request, repo_type, repo_id)
        sha = repo.resolve_or_raise(rev)
        return json_response([{"id": c["id"], "title": c["title"], "message": c["message"], "date": c["date"],
                       "authors": [{"user": c["author"], "avatar": None}]} for c in repo.history(sha)])
