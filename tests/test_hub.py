"""The local Hub server, driven over HTTP by the real huggingface_hub client (and httpx for raw protocol checks)."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

# huggingface_hub's own LFS PUT (data=fileobj) triggers this httpx2 warning; it is not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture
def api(hub):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.url, token=hub.token)


@pytest.fixture
def repo_id(request):
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:60].strip("-.")
    return f"test-org/{name}-{uuid.uuid4().hex[:6]}"


def _add(path: str, data: bytes):
    from huggingface_hub import CommitOperationAdd

    return CommitOperationAdd(path_in_repo=path, path_or_fileobj=data)


def test_repo_lifecycle_branches_tags_and_listings(api, repo_id):
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    with pytest.raises(RepositoryNotFoundError):
        api.repo_info(repo_id, repo_type="dataset")
    api.create_repo(repo_id, repo_type="dataset")
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    c1 = api.create_commit(repo_id, [_add("notes.txt", b"one"), _add("data/x.parquet", b"PAR1 fake")],
                           commit_message="first", repo_type="dataset")
    api.create_tag(repo_id, tag="v1.0", repo_type="dataset")
    api.create_branch(repo_id, branch="dev", repo_type="dataset")
    c2 = api.create_commit(repo_id, [_add("notes.txt", b"two")], commit_message="second", repo_type="dataset",
                           revision="dev")

    refs = api.list_repo_refs(repo_id, repo_type="dataset")
    assert {b.name: b.target_commit for b in refs.branches} == {"main": c1.oid, "dev": c2.oid}
    assert {t.name: t.target_commit for t in refs.tags} == {"v1.0": c1.oid}
    assert [c.title for c in api.list_repo_commits(repo_id, repo_type="dataset", revision="dev")] == [
        "second", "first", "initial commit"]

    files = {f.path: f for f in api.list_repo_tree(repo_id, repo_type="dataset", revision="v1.0", recursive=True)}
    assert set(files) == {".gitattributes", "notes.txt", "data", "data/x.parquet"}
    assert files["data/x.parquet"].lfs is not None and files["notes.txt"].lfs is None  # preupload picked LFS by suffix
    top = {f.path for f in api.list_repo_tree(repo_id, repo_type="dataset")}
    assert top == {".gitattributes", "notes.txt", "data"}
    info = api.get_paths_info(repo_id, ["notes.txt", "data", "missing"], repo_type="dataset", revision="dev")
    assert [(type(i).__name__, i.path) for i in info] == [("RepoFile", "notes.txt"), ("RepoFolder", "data")]
    assert info[0].size == 3
    expanded = api.list_repo_tree(repo_id, repo_type="dataset", revision="dev", expand=True)
    assert {f.path: f.last_commit.title for f in expanded if hasattr(f, "blob_id")}["notes.txt"] == "second"

    # every name of a revision resolves: tag, branch, full sha, short sha
    for rev, want in [("v1.0", c1.oid), ("dev", c2.oid), (c1.oid, c1.oid), (c2.oid[:8], c2.oid)]:
        assert api.dataset_info(repo_id, revision=rev).sha == want
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(repo_id, revision="v9")

    api.delete_tag(repo_id, tag="v1.0", repo_type="dataset")
    api.delete_branch(repo_id, branch="dev", repo_type="dataset")
    refs = api.list_repo_refs(repo_id, repo_type="dataset")
    assert [b.name for b in refs.branches] == ["main"] and refs.tags == []
    api.delete_repo(repo_id, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info(repo_id, repo_type="dataset")


def test_tags_and_branches_conflict(api, repo_id):
    from huggingface_hub.errors import HfHubHTTPError

    api.create_repo(repo_id)
    api.create_tag(repo_id, tag="v1")
    with pytest.raises(HfHubHTTPError) as e:
        api.create_tag(repo_id, tag="v1")
    assert e.value.response.status_code == 409
    api.create_branch(repo_id, branch="b")
    with pytest.raises(HfHubHTTPError) as e:
        api.create_branch(repo_id, branch="b")
    assert e.value.response.status_code == 409
    api.create_branch(repo_id, branch="b", exist_ok=True)


def test_resolve_headers_range_and_errors(hub, api, repo_id):
    payload = bytes(range(256)) * 40  # 10240 bytes
    api.create_repo(repo_id)
    sha = api.create_commit(repo_id, [_add("w.safetensors", payload), _add("cfg.json", b'{"a": 1}')],
                            commit_message="files").oid
    url = f"{hub.url}/{repo_id}/resolve/main/w.safetensors"
    with httpx.Client() as http:
        head = http.head(url)
        assert head.status_code == 200
        assert head.headers["X-Repo-Commit"] == sha
        assert head.headers["X-Linked-Size"] == str(len(payload)) == head.headers["Content-Length"]
        assert head.headers["X-Linked-Etag"].strip('"') == __import__("hashlib").sha256(payload).hexdigest()
        assert http.get(url).content == payload
        part = http.get(url, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == payload[100:200]
        assert part.headers["Content-Range"] == f"bytes 100-199/{len(payload)}"
        assert http.get(url, headers={"Range": "bytes=-10"}).content == payload[-10:]
        assert http.get(url, headers={"Range": "bytes=10200-"}).content == payload[10200:]
        assert http.get(url, headers={"Range": f"bytes={len(payload)}-"}).status_code == 416
        pointer = http.get(url.replace("/resolve/", "/raw/")).text  # /raw/ shows the git-lfs pointer
        assert pointer.startswith("version https://git-lfs") and f"size {len(payload)}" in pointer
        regular = http.head(f"{hub.url}/{repo_id}/resolve/{sha}/cfg.json")
        assert "X-Linked-Etag" not in regular.headers and regular.headers["ETag"].strip('"') == \
            __import__("huggingface_hub").utils.sha.git_hash(b'{"a": 1}')

        missing = http.get(f"{hub.url}/{repo_id}/resolve/main/nope.txt")
        assert (missing.status_code, missing.headers["X-Error-Code"]) == (404, "EntryNotFound")
        assert missing.headers["X-Repo-Commit"] == sha
        bad_rev = http.get(f"{hub.url}/{repo_id}/resolve/nope/cfg.json")
        assert (bad_rev.status_code, bad_rev.headers["X-Error-Code"]) == (404, "RevisionNotFound")
        no_repo = http.get(f"{hub.url}/test-org/does-not-exist/resolve/main/cfg.json")
        assert (no_repo.status_code, no_repo.headers["X-Error-Code"]) == (404, "RepoNotFound")
        assert "X-Error-Message" in no_repo.headers


def test_stale_parent_commit_is_refused_and_branch_kept(api, repo_id):
    from huggingface_hub.errors import HfHubHTTPError

    api.create_repo(repo_id)
    old = api.create_commit(repo_id, [_add("a.txt", b"a")], commit_message="a").oid
    new = api.create_commit(repo_id, [_add("b.txt", b"b")], commit_message="b", parent_commit=old).oid
    with pytest.raises(HfHubHTTPError) as e:
        api.create_commit(repo_id, [_add("c.txt", b"c")], commit_message="c", parent_commit=old)
    assert e.value.response.status_code == 412
    assert api.model_info(repo_id).sha == new
    assert sorted(api.list_repo_files(repo_id)) == [".gitattributes", "a.txt", "b.txt"]


def test_commit_rejected_midway_changes_nothing(hub, api, repo_id):
    """An LFS file that was never uploaded, or a delete of a missing file, after valid operations: the whole
    commit is refused and the branch still points at the previous commit."""
    api.create_repo(repo_id)
    before = api.create_commit(repo_id, [_add("keep.txt", b"keep")], commit_message="base").oid
    lines = [{"key": "header", "value": {"summary": "bad", "description": ""}},
             {"key": "file", "value": {"path": "new.txt", "content": base64.b64encode(b"x").decode(),
                                       "encoding": "base64"}},
             {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": "0" * 64, "size": 5}}]
    body = "\n".join(json.dumps(x) for x in lines)
    headers = {"Authorization": f"Bearer {hub.token}", "Content-Type": "application/x-ndjson"}
    r = httpx.post(f"{hub.url}/api/models/{repo_id}/commit/main", content=body, headers=headers)
    assert r.status_code == 422 and "never uploaded" in r.json()["error"]
    lines[2] = {"key": "deletedFile", "value": {"path": "ghost.txt"}}
    r = httpx.post(f"{hub.url}/api/models/{repo_id}/commit/main",
                   content="\n".join(json.dumps(x) for x in lines), headers=headers)
    assert (r.status_code, r.headers["X-Error-Code"]) == (404, "EntryNotFound")
    assert api.model_info(repo_id).sha == before
    assert sorted(api.list_repo_files(repo_id)) == [".gitattributes", "keep.txt"]


def test_writes_need_the_token_reads_do_not(hub, repo_id):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    good, wrong, anonymous = HfApi(hub.url, token=hub.token), HfApi(hub.url, token="hf_wrong"), HfApi(hub.url,
                                                                                                   token=False)
    for client in (wrong, anonymous):
        with pytest.raises(HfHubHTTPError) as e:
            client.create_repo(repo_id)
        assert e.value.response.status_code == 401
    assert not good.repo_exists(repo_id)
    good.create_repo(repo_id)
    before = good.model_info(repo_id).sha
    for client in (wrong, anonymous):
        for write in (lambda: client.create_commit(repo_id, [_add("w.safetensors", b"w" * 100)], commit_message="x"),
                      lambda: client.create_tag(repo_id, tag="v1"),
                      lambda: client.create_branch(repo_id, branch="x")):
            with pytest.raises(HfHubHTTPError) as e:
                write()
            assert e.value.response.status_code == 401
    assert anonymous.model_info(repo_id).sha == before  # public repo: reads are open
    refs = good.list_repo_refs(repo_id)
    assert refs.tags == [] and [b.name for b in refs.branches] == ["main"]


def test_lfs_upload_link_is_signed(hub, api, repo_id):
    api.create_repo(repo_id)
    data = b"payload" * 10
    oid = __import__("hashlib").sha256(data).hexdigest()
    r = httpx.post(f"{hub.url}/{repo_id}.git/info/lfs/objects/batch",
                   json={"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]},
                   headers={"Authorization": f"Bearer {hub.token}"})
    href = r.json()["objects"][0]["actions"]["upload"]["href"]
    assert hub.token not in href
    assert httpx.put(href.replace("sig=", "sig=0"), content=data).status_code == 403
    assert httpx.put(href, content=data[:-1] + b"!").status_code == 400  # content must match the oid
    assert httpx.put(href, content=data).status_code == 200  # no Authorization header, like a presigned URL


def test_private_repo_is_hidden_without_token(hub, api, repo_id):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    api.create_repo(repo_id, private=True)
    assert api.model_info(repo_id).private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(hub.url, token=False).model_info(repo_id)


def test_validate_yaml_endpoint(hub):
    def check(content, repo_type="dataset"):
        return httpx.post(f"{hub.url}/api/validate-yaml", json={"content": content, "repoType": repo_type})

    ok = check("---\nlicense: mit\nconfigs:\n- config_name: a\n  data_files:\n  - split: train\n    path: a/*\n---\n")
    assert ok.status_code == 200 and ok.json()["errors"] == []
    for bad, needle in [("---\nlicense: [unclosed\n---\n", "not valid YAML"),
                        ("---\nlicense: made-up-license\n---\n", "license"),
                        ("---\nsize_categories: [lots]\n---\n", "size_categories"),
                        ("---\nconfigs:\n- config_name: a\n  data_files:\n  - split: 'bad split'\n    path: x\n---\n",
                         "split name"),
                        ("---\nconfigs: {a: 1}\n---\n", "configs"),
                        ("---\nlicense: mit\n", "never closed")]:
        r = check(bad)
        assert r.status_code == 400, bad
        assert needle in r.json()["error"], (needle, r.json())
    model_bad = check("---\nmodel-index:\n- name: m\n  results:\n  - task: {type: text-generation}\n---\n", "model")
    assert model_bad.status_code == 400 and "dataset" in model_bad.json()["error"]


def test_xet_is_refused_with_a_hint(hub, repo_id, api):
    api.create_repo(repo_id)
    r = httpx.get(f"{hub.url}/api/models/{repo_id}/xet-write-token/main",
                  headers={"Authorization": f"Bearer {hub.token}"})
    assert r.status_code == 501 and "HF_HUB_DISABLE_XET" in r.json()["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_cli_server(root: Path, port: int, token: str, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "MATHGENIE_HUB_TOKEN": token}
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, "-m", "mathgenie.cli", "-v", "hub", "serve", "--root", str(root),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/models").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"hub CLI did not start:\n{log_path.read_text()}")


def test_cli_server_restart_persists_and_never_logs_token(tmp_path):
    """`mathgenie hub serve` in a subprocess: repos, commits, tags survive a restart; the token appears nowhere in
    its (debug-level) log even though every write carried it."""
    from huggingface_hub import HfApi, hf_hub_download

    token, port, log = "hf_cli_secret_" + uuid.uuid4().hex, _free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    proc = _start_cli_server(tmp_path / "root", port, token, log)
    try:
        api = HfApi(url, token=token)
        api.create_repo("org/persist", repo_type="dataset")
        sha = api.create_commit("org/persist", [_add("d/x.parquet", b"x" * 2000), _add("a.txt", b"hello")],
                                commit_message="data", repo_type="dataset").oid
        api.create_tag("org/persist", tag="v1.0", repo_type="dataset")
    finally:
        proc.terminate()
        proc.wait(10)
    proc = _start_cli_server(tmp_path / "root", port, token, log)
    try:
        api = HfApi(url, token=token)
        assert api.dataset_info("org/persist", revision="v1.0").sha == sha
        path = hf_hub_download("org/persist", "d/x.parquet", repo_type="dataset", revision="v1.0",
                               cache_dir=tmp_path / "cache", endpoint=url)
        assert Path(path).read_bytes() == b"x" * 2000
    finally:
        proc.terminate()
        proc.wait(10)
    text = log.read_text()
    assert "commit" in text and "POST /api/datasets/org/persist/commit/main" in text  # the log is really captured
    assert token not in text


def test_concurrent_commits_lose_nothing_and_one_parent_wins(api, repo_id):
    """Writes to one repo are serialized: 8 concurrent commits all land (no lost update of the tree), and of 4
    commits made on the same parent exactly one succeeds, the others get 412."""
    from concurrent.futures import ThreadPoolExecutor

    from huggingface_hub.errors import HfHubHTTPError

    api.create_repo(repo_id)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: api.create_commit(repo_id, [_add(f"f{i}.txt", str(i).encode())],
                                                  commit_message=f"c{i}"), range(8)))
    assert sorted(api.list_repo_files(repo_id)) == [".gitattributes"] + [f"f{i}.txt" for i in range(8)]
    assert len(api.list_repo_commits(repo_id)) == 9

    parent = api.model_info(repo_id).sha

    def racer(i):
        try:
            return api.create_commit(repo_id, [_add("race.txt", str(i).encode())], commit_message=f"r{i}",
                                     parent_commit=parent).oid
        except HfHubHTTPError as e:
            return e.response.status_code

    outcomes = list(ThreadPoolExecutor(4).map(racer, range(4)))
    winners = [o for o in outcomes if isinstance(o, str)]
    assert len(winners) == 1 and sorted(o for o in outcomes if isinstance(o, int)) == [412, 412, 412]
    assert api.model_info(repo_id).sha == winners[0]


def test_bad_requests_get_clear_errors(hub, api, repo_id):
    api.create_repo(repo_id)
    auth = {"Authorization": f"Bearer {hub.token}"}
    r = httpx.post(f"{hub.url}/api/models/{repo_id}/preupload/main", content=b"{not json", headers=auth)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = httpx.post(f"{hub.url}/api/models/{repo_id}/commit/main", headers=auth,
                   content=json.dumps({"key": "header", "value": {"summary": "x"}}) + "\n" + json.dumps(
                       {"key": "file", "value": {"path": "../escape.txt", "content": ""}}))
    assert r.status_code == 400 and "invalid path" in r.json()["error"]
    r = httpx.post(f"{hub.url}/api/repos/create", json={"name": "bad--name", "organization": "o"}, headers=auth)
    assert r.status_code == 400 and "bad--name" in r.json()["error"]
    r = httpx.post(f"{hub.url}/api/models/{repo_id}/commit/main?create_pr=1", headers=auth, content=b"")
    assert r.status_code == 400 and "pull requests" in r.json()["error"]
    tag_sha = api.model_info(repo_id).sha
    api.create_tag(repo_id, tag="t1")
    r = httpx.post(f"{hub.url}/api/models/{repo_id}/commit/t1", headers=auth,
                   content=json.dumps({"key": "header", "value": {"summary": "x"}}))
    assert r.status_code == 400 and "not a branch" in r.json()["error"]
    assert api.model_info(repo_id).sha == tag_sha
