"""Versioned, atomic pushes of datasets and models to the real local Hub, read back by datasets/transformers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import pytest

# huggingface_hub's own LFS PUT (data=fileobj) triggers this httpx2 warning; it is not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

import datasets  # noqa: E402
from datasets import Features, List, Value  # noqa: E402

FEATURES = Features({"id": Value("string"), "source": Value("string"), "round": Value("int32"),
                     "blocks": List({"type": Value("string"), "content": Value("string")})})


def _rows(ids: list[str], source: str = "gsm8k") -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"id": ids, "source": [source] * len(ids), "round": [1] * len(ids),
         "blocks": [[{"type": "text", "content": f"solution of {i}"}] for i in ids]}, features=FEATURES)


def _dd(train: list[str], test: list[str] = ("t0",)) -> datasets.DatasetDict:
    return datasets.DatasetDict({"train": _rows(train), "test": _rows(list(test), "math")})


@pytest.fixture
def repo_id(request):
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:60].strip("-.")
    return f"test-org/{name}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def api(hub):
    from huggingface_hub import HfApi

    return HfApi()


def _fresh_python(code: str, tmp_path) -> dict:
    """Run ``code`` in a new interpreter with an empty HF cache (same endpoint); it prints one JSON line."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "fresh_hf_home")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_versions_load_back_in_a_fresh_process(hub, api, repo_id, tmp_path):
    from mathgenie.upload import push_dataset

    v1 = push_dataset({"gsm8k": _dd(["a", "b", "c"]), "extra": _dd(["e"])}, repo_id, tag="v1.0", config_hash="h-one")
    v2 = push_dataset({"gsm8k": _dd(["a", "b", "c", "d"]), "more": _dd(["m"])}, repo_id, tag="v1.1",
                      config_hash="h-two")
    assert v1.commit_sha != v2.commit_sha and v2.deleted == ["extra/test-00000-of-00001.parquet",
                                                            "extra/train-00000-of-00001.parquet"]
    assert "keep gsm8k/test-00000-of-00001.parquet" in " ".join(v2.operations)  # unchanged shard not re-sent
    head = api.list_repo_commits(repo_id, repo_type="dataset")[0]
    assert head.title.startswith("Push 2 config(s), 7 rows (v1.1)") and "Config-Hash: h-two" in head.message
    assert "Lineage: gsm8k/train=4, gsm8k/test=1, more/train=1, more/test=1" in head.message

    out = _fresh_python(f"""
import json, datasets
from huggingface_hub import snapshot_download
repo = {repo_id!r}
load = lambda config, rev, **kw: datasets.load_dataset(repo, config, revision=rev, **kw)
v10 = load("gsm8k", "v1.0")
out = {{
    "v1.0": list(v10["train"]["id"]), "v1.1": list(load("gsm8k", "v1.1")["train"]["id"]),
    "sha": list(load("gsm8k", {v1.commit_sha!r}, split="train")["id"]),
    "extra@v1.0": list(load("extra", "v1.0", split="train")["id"]),
    "stream": [r["id"] for r in load("gsm8k", "v1.1", split="train", streaming=True)],
    "features_ok": v10["train"].features == datasets.Features.from_dict({FEATURES.to_dict()!r}),
    "blocks": v10["train"][0]["blocks"],
    "snapshot": sorted(__import__("os").listdir(snapshot_download(repo, repo_type="dataset", revision="v1.0"))),
}}
try:
    load("extra", "v1.1")
    out["extra@v1.1"] = "loaded"
except ValueError as e:
    out["extra@v1.1"] = "missing"
print(json.dumps(out))
""", tmp_path)
    assert out["v1.0"] == ["a", "b", "c"] and out["v1.1"] == ["a", "b", "c", "d"]
    assert out["sha"] == ["a", "b", "c"] and out["extra@v1.0"] == ["e"]
    assert out["stream"] == ["a", "b", "c", "d"]
    assert out["features_ok"] and out["blocks"] == [{"type": "text", "content": "solution of a"}]
    assert out["extra@v1.1"] == "missing"  # a config dropped in v1.1 is gone from that revision only
    assert out["snapshot"] == [".gitattributes", "README.md", "extra", "gsm8k"]


def test_tags_are_never_moved(api, repo_id):
    from mathgenie.upload import PushError, push_dataset

    first = push_dataset({"c": _dd(["a"])}, repo_id, tag="v1")
    again = push_dataset({"c": _dd(["a"])}, repo_id, tag="v1")  # same content, same tag: a no-op
    assert (again.commit_sha, again.changed) == (first.commit_sha, False)
    with pytest.raises(PushError, match="already exists"):
        push_dataset({"c": _dd(["a", "b"])}, repo_id, tag="v1")
    assert api.dataset_info(repo_id).sha == first.commit_sha  # refused before anything was written


def test_dry_run_writes_nothing(api, repo_id):
    from mathgenie.upload import push_dataset

    plan = push_dataset({"c": _dd(["a"])}, repo_id, tag="v1", dry_run=True)
    assert plan.dry_run and plan.commit_sha is None
    assert "add c/train-00000-of-00001.parquet" in "\n".join(plan.operations)
    assert not api.repo_exists(repo_id, repo_type="dataset")
    real = push_dataset({"c": _dd(["a"])}, repo_id, tag="v1")
    plan = push_dataset({"d": _dd(["x"])}, repo_id, tag="v2", dry_run=True)
    assert "delete c/train-00000-of-00001.parquet" in plan.operations
    assert api.dataset_info(repo_id).sha == real.commit_sha
    assert [t.name for t in api.list_repo_refs(repo_id, repo_type="dataset").tags] == ["v1"]


def test_failed_pushes_leave_the_previous_revision(hub, api, repo_id):
    from huggingface_hub.errors import HfHubHTTPError

    from mathgenie.upload import push_dataset

    good = push_dataset({"c": _dd(["a", "b"])}, repo_id, tag="v1")
    files = sorted(api.list_repo_files(repo_id, repo_type="dataset"))
    # The server refuses the commit after the shards were uploaded: "c" cannot be both a file and a folder.
    with pytest.raises(HfHubHTTPError) as e:
        push_dataset({"c": _dd(["a", "b", "new"])}, repo_id, tag="v2", extra_files={"c": b"clash"})
    assert e.value.response.status_code == 400
    with pytest.raises(HfHubHTTPError) as e:
        push_dataset({"c": _dd(["a", "b", "new"])}, repo_id, tag="v2", token="hf_wrong_token")
    assert e.value.response.status_code == 401
    assert api.dataset_info(repo_id).sha == good.commit_sha
    assert sorted(api.list_repo_files(repo_id, repo_type="dataset")) == files
    assert [t.name for t in api.list_repo_refs(repo_id, repo_type="dataset").tags] == ["v1"]
    assert list(datasets.load_dataset(repo_id, "c", split="train")["id"]) == ["a", "b"]


def test_bad_card_is_refused_before_upload(api, repo_id):
    from huggingface_hub import DatasetCard

    from mathgenie.upload import push_dataset

    good = push_dataset({"c": _dd(["a"])}, repo_id)
    bad = DatasetCard("---\nlicense: not-a-license\n---\n# card\n")
    with pytest.raises(ValueError, match="license"):
        push_dataset({"c": _dd(["a", "b"])}, repo_id, card=bad)
    assert api.dataset_info(repo_id).sha == good.commit_sha


def test_push_to_a_new_branch_and_big_splits_are_sharded(api, repo_id):
    from mathgenie.upload import push_dataset

    push_dataset({"c": _dd(["a"])}, repo_id)
    ids = [f"q{i:03d}" for i in range(300)]
    res = push_dataset({"c": _dd(ids)}, repo_id, branch="exp", max_shard_bytes=8_000)
    shards = [f for f in res.files if f.startswith("c/train-")]
    assert len(shards) > 1 and shards[0].endswith(f"-00000-of-{len(shards):05d}.parquet")
    assert api.dataset_info(repo_id).sha != res.commit_sha  # main untouched
    loaded = datasets.load_dataset(repo_id, "c", split="train", revision="exp")
    assert list(loaded["id"]) == ids


def test_input_errors_name_the_problem():
    from mathgenie.upload import push_dataset

    with pytest.raises(ValueError, match="empty"):
        push_dataset({}, "o/r")
    with pytest.raises(ValueError, match="'bad name'"):
        push_dataset({"bad name": _dd(["a"])}, "o/r")
    mixed = datasets.DatasetDict({"train": _rows(["a"]), "test": datasets.Dataset.from_dict({"other": [1]})})
    with pytest.raises(ValueError, match="split 'test'"):
        push_dataset({"c": mixed}, "o/r")


def _tiny_llama(path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100, max_position_embeddings=64)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    return model


def test_push_model_and_load_it_at_the_tag(api, repo_id, tmp_path):
    import torch
    from huggingface_hub import ModelCard, snapshot_download
    from transformers import AutoModelForCausalLM

    from mathgenie.cards import render_model_card
    from mathgenie.upload import push_model

    model = _tiny_llama(tmp_path / "ckpt")
    card = render_model_card(repo_id=repo_id, base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
                             datasets=["test-org/data@v1.0"], hyperparameters={"learning_rate": 1e-4})
    res = push_model(tmp_path / "ckpt", repo_id, card=card, tag="v1")
    assert "model.safetensors" in res.files and "README.md" in res.files
    _tiny_llama(tmp_path / "ckpt2")  # same seed, same weights: a new tag on main needs a change → retrain
    (tmp_path / "ckpt2" / "extra.txt").write_text("v2")
    push_model(tmp_path / "ckpt2", repo_id, tag="v2")

    loaded = AutoModelForCausalLM.from_pretrained(repo_id, revision="v1", cache_dir=tmp_path / "cache")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    snap = snapshot_download(repo_id, revision="v1", cache_dir=tmp_path / "cache")
    assert sorted(os.listdir(snap)) == sorted([".gitattributes", *res.files])
    readme = api.hf_hub_download(repo_id, "README.md", revision="v1", cache_dir=tmp_path / "cache")
    assert ModelCard.load(readme).data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "extra.txt" in api.list_repo_files(repo_id, revision="v2")
    assert "README.md" not in api.list_repo_files(repo_id, revision="v2")  # a revision is exactly its folder


def _stage_folder(path, ids: list[str], shards: int = 1):
    """A stage folder as the pipeline writes it (`StageStore`): one part and one manifest per shard."""
    from mathgenie.shards import Shard, StageStore

    store = StageStore(path.parent, path.name)
    rows = _dd(ids)["train"]
    for i in range(shards):
        part = rows.shard(num_shards=shards, index=i, contiguous=True)
        store.write(Shard(i, shards), part, {"stage": "augment", "config_hash": "abc123", "card": {
            "description": "Rewritten solutions.", "params": {"model": "m", "hf_token": "x"}}})
    return store.dir


def test_cli_push_of_a_stage_folder(api, repo_id, tmp_path, capsys):
    from mathgenie.cli import main

    stage = _stage_folder(tmp_path / "run" / "augmented", ["a", "b", "c"], shards=2)
    (tmp_path / "run" / "funnel.json").write_text(json.dumps({"stages": [{"stage": "augment", "rows_in": 1,
                                                                           "rows_out": 3}]}))
    (tmp_path / "run" / "funnel.png").write_bytes(b"\x89PNG fake")
    assert main(["push", str(stage), repo_id, "--tag", "v1.0", "--dry-run"]) == 0
    assert "add default/train-00000-of-00001.parquet" in capsys.readouterr().out
    assert not api.repo_exists(repo_id, repo_type="dataset")
    assert main(["push", str(stage), repo_id, "--tag", "v1.0"]) == 0
    refs = api.list_repo_refs(repo_id, repo_type="dataset")
    assert [t.name for t in refs.tags] == ["v1.0"]
    readme = open(api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision="v1.0")).read()
    assert "abc123" in readme and 'revision="v1.0"' in readme and "<redacted>" in readme
    assert "Rewritten solutions." in readme and "| augment |" in readme
    assert {"funnel.png", "funnel.json"} <= set(api.list_repo_files(repo_id, repo_type="dataset"))
    assert main(["push", str(tmp_path / "nowhere"), repo_id]) == 1
    (tmp_path / "card.json").write_text('{"license": "mit"}')  # a dataset's card comes from its manifests
    assert main(["push", str(stage), repo_id, "--card-data", str(tmp_path / "card.json")]) == 1


def test_an_unreachable_hub_is_one_clear_line_not_a_traceback(tmp_path):
    stage = _stage_folder(tmp_path / "stage", ["a"])
    env = dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_DISABLE_XET="1")  # port 9: nothing listens
    proc = subprocess.run([sys.executable, "-m", "mathgenie.cli", "push", str(stage), "org/x", "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "mathgenie push: cannot reach the Hub at http://127.0.0.1:9" in proc.stderr
    assert "Traceback" not in proc.stderr
