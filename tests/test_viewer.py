"""The local hub's dataset viewer: the dataset-viewer JSON API over HTTP, and the pages in a real headless Chromium
(Debian's ``chromium``; the test fails when it is missing). The five stage repos of one pipeline run are pushed with
``datasets.push_to_hub``; one verified row is traced back through its question and augmented solution to its seed."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

ROWS = 45  # per stage: three pages of 20
TRACED = 23  # the verified row the test follows back to its seed (on page 2, so links must compute the page)
SEED_ID = "gsm8k/train/7"
AUG_ID = f"{SEED_ID}/r1/p2/0"
QUESTION_ID = f"{AUG_ID}/q0"
SOLUTION_ID = f"{QUESTION_ID}/s0"
CODE = "apples = 3 + 4 * 2\nprint(apples)"


def _stage_rows(stage: str) -> list[dict]:
    """ROWS rows of one stage (schema: mathgenie.schema.STAGE_FEATURES); the traced lineage sits at one index each."""
    rows = []
    for i in range(ROWS):
        traced = i == TRACED
        seed = SEED_ID if traced else f"gsm8k/train/{100 + i}"
        aug, q = (AUG_ID, QUESTION_ID) if traced else (f"{seed}/r1/p1/0", f"{seed}/r1/p1/0/q0")
        lineage = {"seed_id": seed, "source": "gsm8k", "round": 1, "prompt_id": "2"}
        question = "Tom has 3 apples and buys 4 bags of 2 apples. How many apples?" if traced else f"Question {i}?"
        blocks = [{"type": "text", "content": "Count the apples with code."}, {"type": "code", "content": CODE},
                  {"type": "execution", "content": "11"}, {"type": "text", "content": "Tom has \\boxed{11} apples."}]
        solved = {"solution_id": f"{q}/s0", "question_id": q, **lineage, "question": question, "blocks": blocks,
                  "answer": "11", "finish_reason": "endofmessage", "num_code_blocks": 1, "model": "smollm2",
                  "revision": "abc123"}
        rows.append({
            "seed": {"id": seed, "source": "gsm8k", "question": question, "solution": "3 + 8 = 11\n#### 11",
                     "answer": "11", "level": None, "type": None},
            "augmented": {"id": aug, **lineage, "parent_id": seed, "solution": f"Rewritten: 3 + 4*2 = 11 ({i})",
                          "model": "smollm2", "revision": "abc123", "question": None},
            "back_translated": {"question_id": q, **lineage, "augmented_id": aug, "augmented_solution": "3 + 8 = 11",
                                "question": question, "model": "smollm2", "revision": "abc123"},
            "solved": solved,
            "verified": {**solved, "agreement": 1.0, "verification": blocks[:3], "verdict": "correct",
                         "verifier_model": "smollm2", "verifier_revision": "abc123"},
        }[stage])
    return rows


def _funnel_png() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2), dpi=60)
    ax.barh(["verified", "solved", "back-translated", "augmented", "seed"], [45, 60, 80, 90, 45][::-1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


@pytest.fixture(scope="module")
def stage_repos(hub) -> dict[str, str]:
    return publish_stage_repos(hub.url, hub.token, f"viewer-{uuid.uuid4().hex[:6]}")


def publish_stage_repos(url: str, token: str, org: str) -> dict[str, str]:
    """``{stage: repo_id}``: the five stage repos of one run, each with a card tagged by its stage, the funnel plot
    and a tag."""
    import datasets
    from huggingface_hub import DatasetCard, DatasetCardData, HfApi

    from mathgenie.schema import STAGE_FEATURES

    api = HfApi(url, token=token)
    repos, png = {}, _funnel_png()
    for stage in STAGE_FEATURES:
        repo_id = f"{org}/mathgenie-{stage.replace('_', '-')}"
        ds = datasets.Dataset.from_list(_stage_rows(stage), features=STAGE_FEATURES[stage])
        ds.push_to_hub(repo_id, token=token)
        template = "---\n{{ card_data }}\n---\n# {{ title }}\n\n![funnel](funnel.png)\n\n<script>alert('x')</script>\n"
        card = DatasetCard.from_template(DatasetCardData(license="mit", tags=["mathgenie", stage.replace("_", "-")]),
                                         template_str=template, title=f"MathGenie {stage}")
        card.data["configs"] = [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
        api.create_commit(repo_id, [_add("README.md", str(card).encode()), _add("funnel.png", png)],
                          commit_message="card and funnel", repo_type="dataset")
        api.create_tag(repo_id, tag="v1.0", repo_type="dataset")
        repos[stage] = repo_id
    return repos


def _add(path: str, data: bytes):
    from huggingface_hub import CommitOperationAdd

    return CommitOperationAdd(path_in_repo=path, path_or_fileobj=data)


# -- the dataset-viewer JSON API ---------------------------------------------------------------------------------------
def test_dataset_viewer_api_shapes(hub, stage_repos):
    from mathgenie.schema import VERIFIED_FEATURES

    verified = stage_repos["verified"]
    with httpx.Client(base_url=hub.url) as http:
        splits = http.get("/splits", params={"dataset": verified}).json()
        assert splits["splits"] == [{"dataset": verified, "config": "default", "split": "train"}]
        q = {"dataset": verified, "config": "default", "split": "train"}
        first = http.get("/first-rows", params=q).json()
        assert [f["name"] for f in first["features"]][:3] == ["solution_id", "question_id", "seed_id"]
        assert first["features"][0]["type"] == {"dtype": "string", "_type": "Value"}
        assert len(first["rows"]) == ROWS and first["truncated"] is False
        page = http.get("/rows", params={**q, "offset": TRACED, "length": 2}).json()
        assert page["num_rows_total"] == ROWS and [r["row_idx"] for r in page["rows"]] == [TRACED, TRACED + 1]
        assert page["rows"][0]["row"]["solution_id"] == SOLUTION_ID
        assert page["rows"][0]["row"]["blocks"][1] == {"type": "code", "content": CODE}
        info = http.get("/info", params={"dataset": verified, "config": "default"}).json()["dataset_info"]
        assert info["splits"]["train"]["num_examples"] == ROWS and "verdict" in info["features"]
        size = http.get("/size", params={"dataset": verified}).json()["size"]
        assert size["dataset"]["num_rows"] == ROWS and size["splits"][0]["num_columns"] == len(VERIFIED_FEATURES)
        parquet = http.get("/parquet", params={"dataset": verified}).json()["parquet_files"]
        assert http.get(parquet[0]["url"]).content[:4] == b"PAR1"
        assert http.get("/is-valid", params={"dataset": verified}).json()["viewer"] is True
        # errors: the datasets-server's statuses, {"error": ...}
        for params, status, needle in [({}, 422, "'dataset' is required"),
                                       ({"dataset": "a/b/c"}, 422, "namespace/name"),
                                       ({"dataset": "nobody/none"}, 404, "Repository Not Found"),
                                       ({**q, "split": "test"}, 404, "default/train"),
                                       ({**q, "length": 101}, 422, "'length'"),
                                       ({**q, "offset": -1}, 422, "'offset'")]:
            r = http.get("/rows", params=params)
            assert r.status_code == status and needle in r.json()["error"], (params, r.text)


def test_rows_page_and_model_page(hub, stage_repos):
    from huggingface_hub import HfApi

    model = f"{stage_repos['seed'].split('/')[0]}/tiny-model"
    api = HfApi(hub.url, token=hub.token)
    api.create_repo(model)
    api.create_commit(model, [_add("config.json", b'{"model_type": "llama"}'),
                              _add("README.md", b"---\nlicense: apache-2.0\n---\n# Tiny model\n\nTrained on **x**.")],
                      commit_message="weights and card")
    with httpx.Client(base_url=hub.url) as http:
        page = http.get(f"/models/{model}").text
        assert "config.json" in page and "<strong>x</strong>" in page and "weights and card" in page
        assert f'href="/models/{model}"' in http.get("/", params={"search": "tiny-model"}).text
        base = f"/datasets/{stage_repos['seed']}/viewer/default/train"
        last = http.get(base, params={"offset": 40, "length": 20}).text
        assert re.findall(r'data-row="(\d+)"', last) == [str(i) for i in range(40, ROWS)]
        assert http.get(base, params={"offset": "x"}).status_code == 400
        assert http.get(f"/datasets/{stage_repos['seed']}/viewer/default/nope").status_code == 404
        assert http.get(f"/datasets/{stage_repos['seed']}/viewer").status_code == 302


# -- the pages, in a real browser --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:  # a missing browser is a failure, not a skip: `make test` installs it
        pytest.fail("chromium is not installed (Debian: apt-get install -y chromium); the viewer tests need it")
    return exe


def _browse(chromium: str, tmp_path: Path, url: str, screenshot: Path | None = None) -> str:
    """The DOM of ``url`` after load (redirects followed), and optionally a screenshot, from headless Chromium."""
    profile = tmp_path / f"profile-{uuid.uuid4().hex[:6]}"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={profile}", "--window-size=1280,1500"]
    if screenshot is not None:
        subprocess.run([chromium, *flags, f"--screenshot={screenshot}", url], check=True, capture_output=True,
                       timeout=120)
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = subprocess.run([chromium, *flags, "--dump-dom", url], check=True, capture_output=True, timeout=120)
    return out.stdout.decode()


def _article(dom: str, idx: int) -> str:
    m = re.search(rf'<article class="row[^"]*" id="row-{idx}".*?</article>', dom, re.DOTALL)
    assert m, f"row {idx} is not on the page"
    return m.group(0)


def test_pages_in_headless_chromium(hub, stage_repos, chromium, tmp_path):
    verified = stage_repos["verified"]
    index = _browse(chromium, tmp_path, f"{hub.url}/?search=mathgenie-verified")
    assert f'href="/datasets/{verified}"' in index and stage_repos["seed"] not in index

    page = _browse(chromium, tmp_path, f"{hub.url}/datasets/{verified}", tmp_path / "dataset_page.png")
    assert f'data-rows="{ROWS}"' in page and "view rows" in page  # the row count a person checks first
    assert re.search(r'<img class="plot" src="/datasets/[^"]+/resolve/[0-9a-f]{40}/funnel.png"', page)
    assert "MathGenie verified</h1>" in page and "<script>alert" not in page  # card rendered, its HTML not run
    assert ">v1.0</a>" in page and "card and funnel" in page  # the tag, the commits

    rows_url = f"{hub.url}/datasets/{verified}/viewer/default/train?offset=20"
    rows = _browse(chromium, tmp_path, rows_url, tmp_path / "rows_page.png")
    assert f'data-total="{ROWS}"' in rows and "rows 20–39 of" in rows
    traced = _article(rows, TRACED)
    code = re.search(r'<div class="lce-block lce-code">.*?<code>(.*?)</code>', traced, re.DOTALL)
    assert code and code.group(1) == CODE  # the code block, apart from the text and the execution output
    assert '<div class="lce-block lce-execution"><span class="lce-label">execution</span><pre>11</pre>' in traced
    links = dict(re.findall(r'class="lineage-link" data-stage="(\w+)" href="([^"]+)"', traced))
    assert set(links) == {"back_translated", "augmented", "seed", "solved"}

    # every lineage link resolves to the page of the row it names, that row highlighted
    for stage, column, value in [("back_translated", "question_id", QUESTION_ID), ("augmented", "id", AUG_ID),
                                 ("seed", "id", SEED_ID), ("solved", "solution_id", SOLUTION_ID)]:
        landed = _browse(chromium, tmp_path, hub.url + links[stage].replace("&amp;", "&"))
        row = re.search(r'<article class="row highlight" id="row-(\d+)".*?</article>', landed, re.DOTALL)
        assert row and int(row.group(1)) == TRACED, stage
        assert f'stage: {stage}' in landed and f">{value}</span>" in row.group(0), (stage, value)

    missing = _browse(chromium, tmp_path, f"{hub.url}/datasets/{verified}/find?column=solution_id&value=nope")
    assert "no row of" in missing
