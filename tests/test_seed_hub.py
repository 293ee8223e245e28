"""The seed on the (local) Hub: push versions with tags and load each from a fresh process; build the seed from Hub
datasets in the raw upstream formats; a malformed seed pushes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mathgenie.builders.cli import push_seed, seed_manifest
from mathgenie.builders.seed import SeedSource, build_seed
from mathgenie.schema import SEED_FEATURES

SEED_REPO = "org/mathgenie-seed"


def load_in_fresh_process(repo_id: str, revision: str, out: Path, home: Path) -> dict:
    """``load_dataset(repo_id, revision=..., split="train")`` in a new interpreter with an empty HF cache, so the rows
    can only come from the Hub over HTTP."""
    code = textwrap.dedent(
        f"""
        import json
        from datasets import load_dataset
        ds = load_dataset({repo_id!r}, revision={revision!r}, split="train")
        rows = {{"features": ds.features.to_dict(), "id": list(ds["id"]), "answer": list(ds["answer"])}}
        json.dump(rows, open({str(out)!r}, "w"))
        """
    )
    env = {**os.environ, "HF_HOME": str(home), "HF_DATASETS_CACHE": str(home / "datasets")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def refs(repo_id: str) -> tuple:
    from huggingface_hub import HfApi

    r = HfApi().list_repo_refs(repo_id, repo_type="dataset")
    return sorted((b.name, b.target_commit) for b in r.branches), sorted((t.name, t.target_commit) for t in r.tags)


def test_seed_versions_on_the_hub(hub, real_data, tmp_path):
    from mathgenie.cli import main as cli_main

    data = [real_data / "gsm8k/train.jsonl", real_data / "math/train.jsonl"]
    sources = [SeedSource("gsm8k", str(data[0])), SeedSource("math", str(data[1]))]
    expected = [json.loads(line) for path in data for line in open(path, encoding="utf-8")]

    # v1.0: the seed of the real train rows shipped in tests/data (1,022 GSM8K + 962 MATH).
    v1 = build_seed(sources)
    push_seed(v1, SEED_REPO, manifest=seed_manifest(sources, limit=None), tag="v1.0")
    loaded = load_in_fresh_process(SEED_REPO, "v1.0", tmp_path / "v1.0.json", tmp_path / "home1")
    assert len(loaded["id"]) == len(expected) == 1_984
    assert loaded["features"] == SEED_FEATURES.to_dict()
    assert loaded["answer"] == [r["answer"] for r in expected]
    assert loaded["id"] == v1["train"]["id"]

    # v1.1: a third source added; each tag keeps its own rows.
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"id": "e0", "question": "1+1?", "solution": "2", "answer": "2"}) + "\n")
    sources_v11 = sources + [SeedSource("extra", str(extra))]
    push_seed(build_seed(sources_v11), SEED_REPO, manifest=seed_manifest(sources_v11, limit=None), tag="v1.1")
    v11 = load_in_fresh_process(SEED_REPO, "v1.1", tmp_path / "v1.1.json", tmp_path / "home2")
    assert len(v11["id"]) == 1_985 and v11["id"][-1] == "extra/e0"
    again = load_in_fresh_process(SEED_REPO, "v1.0", tmp_path / "v1.0b.json", tmp_path / "home3")
    assert again["id"] == loaded["id"]

    # A malformed seed file stops the CLI before anything is pushed: branches and tags are unchanged.
    before = refs(SEED_REPO)
    bad = tmp_path / "bad.jsonl"
    bad_rows = [{"question": "q", "answer": "4"}, {"question": "q", "answer": "x #### 4"}]
    bad.write_text("".join(json.dumps(r) + "\n" for r in bad_rows))
    with pytest.raises(SystemExit, match=r"bad\.jsonl, line 1, field 'answer'"):
        cli_main(["seed", "--gsm8k", str(bad), "--math", str(data[1]), "--push", SEED_REPO, "--tag", "v2.0"])
    assert refs(SEED_REPO) == before
    assert "v2.0" not in dict(before[1])


def _upload_raw(repo_id: str, tables: dict[str, list[dict]], tmp: Path) -> None:
    """A Hub dataset repo in the upstream layout: one ``{config}/train-*.parquet`` per config, configs in the card."""
    from huggingface_hub import HfApi

    lines = ["---", "configs:"]
    for config, rows in tables.items():
        (tmp / config).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), tmp / config / "train-00000-of-00001.parquet")
        lines += [f"- config_name: {config}", "  data_files:", "  - split: train", f"    path: {config}/train-*"]
    (tmp / "README.md").write_text("\n".join(lines + ["---", "", "raw upstream layout for tests", ""]))
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    api.upload_folder(folder_path=str(tmp), repo_id=repo_id, repo_type="dataset")


def test_seed_from_hub_datasets_in_upstream_formats(hub, tmp_path):
    from mathgenie.builders.stage import load_stage
    from mathgenie.cli import main as cli_main

    gsm8k = [
        {"question": "Tom has 1,200 apples and eats 200. How many are left?", "answer": "1200-200=1000\n#### 1,000"},
        {"question": "What is 6 * 7?", "answer": "6*7=<<6*7=42>>42\n#### 42"},
    ]
    socratic = [{"question": r["question"], "answer": "How many? ** " + r["answer"]} for r in gsm8k]
    _upload_raw("seedtest/gsm8k", {"main": gsm8k, "socratic": socratic}, tmp_path / "gsm8k")
    algebra = [{"problem": "Solve $x+1=2$.", "level": "Level 1", "type": "Algebra", "solution": "$x=\\boxed{1}$"}]
    geometry = [
        {"problem": "Area?", "level": "Level ?", "type": "Geometry", "solution": "\\boxed{\\frac{\\pi}{4}}"},
        {"problem": "Angle?", "level": "Level 5", "type": "Geometry", "solution": "\\fbox{90^\\circ}"},
    ]
    _upload_raw("seedtest/hendrycks_math", {"algebra": algebra, "geometry": geometry}, tmp_path / "math")

    out = tmp_path / "seed"
    args = ["seed", "--gsm8k", "seedtest/gsm8k", "--math", "seedtest/hendrycks_math", "--output", str(out)]
    assert cli_main(args) == 0
    seed = load_stage("seed", out)["train"]
    assert seed["id"] == [
        "gsm8k/train/0", "gsm8k/train/1", "math/train/algebra/0", "math/train/geometry/0", "math/train/geometry/1",
    ]
    assert seed["answer"] == ["1000", "42", "1", "\\frac{\\pi}{4}", "90^\\circ"]
    assert seed["solution"][0] == "1200-200=1000"  # config `main` only, not `socratic`
    assert seed["level"] == [None, None, 1, None, 5]
    manifest = json.loads((out / "manifest-00000-of-00001.json").read_text())
    revisions = {s["name"]: s["revision"] for s in manifest["card"]["sources"]}
    assert all(len(r) == 40 for r in revisions.values())  # Hub sources pinned to a commit


def test_seed_cli_pushes_the_bundled_sample_with_a_card(hub, tmp_path):
    import datasets
    from huggingface_hub import DatasetCard

    from mathgenie.cli import main as cli_main

    assert cli_main(["seed", "--output", str(tmp_path / "seed"), "--push", "org/seed-sample", "--tag", "v1.0"]) == 0
    pushed = datasets.load_dataset("org/seed-sample", revision="v1.0", split="train")
    assert pushed.to_list() == build_seed()["train"].to_list()
    card = DatasetCard.load("org/seed-sample", repo_type="dataset")
    assert card.data.license == "mit" and "seed" in card.data.tags
    assert {"openai/gsm8k", "EleutherAI/hendrycks_math"} <= set(card.data.source_datasets)
    assert "Cobbe" in card.text and "Hendrycks" in card.text

    # The written directory is a stage directory: `mathgenie push DIR REPO` publishes the same rows and card sections.
    assert cli_main(["push", str(tmp_path / "seed"), "org/seed-sample-copy", "--tag", "v1.0"]) == 0
    copy = datasets.load_dataset("org/seed-sample-copy", revision="v1.0", split="train")
    assert copy.to_list() == pushed.to_list()
    assert "## Normalization" in DatasetCard.load("org/seed-sample-copy", repo_type="dataset").text
