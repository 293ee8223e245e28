"""Dataset and model cards: content computed from the data, metadata that our Hub's validate-yaml accepts (and
rejects when broken), and no secrets."""

from __future__ import annotations

import json
import os

import httpx
import pytest

import datasets  # noqa: E402


# a prompt with a code fence and blank lines inside: the card must show it exactly
PROMPT = "Rewrite the solution:\n\n\n```python\nprint(1)\n```\n\n{solution}"


def _seed_rows(real_data, name: str, n: int) -> datasets.Dataset:
    rows = [json.loads(line) for line in (real_data / name / "train.jsonl").open().readlines()[:n]]
    return datasets.Dataset.from_dict({"id": [r["id"] for r in rows], "source": [name] * n,
                                       "question": [r["question"] for r in rows], "answer": [r["answer"] for r in rows]})


@pytest.fixture
def seed_configs(real_data):
    mixed = datasets.concatenate_datasets([_seed_rows(real_data, "gsm8k", 7), _seed_rows(real_data, "math", 5)])
    return {"default": datasets.DatasetDict({"train": mixed, "test": _seed_rows(real_data, "gsm8k", 2)}),
            "math_only": datasets.DatasetDict({"train": _seed_rows(real_data, "math", 3)})}


def _table_rows(text: str, header: str) -> list[list[str]]:
    """Data rows of the markdown table whose header line starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_dataset_card_content_is_computed_from_the_data(hub, seed_configs):
    from mathgenie.cards import render_dataset_card

    card = render_dataset_card(
        repo_id="org/mathgenie-seed", stage="seed", configs=seed_configs, config_hash="cafe1234",
        params={"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "abc", "temperature": 0.8,
                "prompt": PROMPT, "sampling": {"n": 4, "top_p": 0.95}},
        lineage=[{"stage": "seed", "repo_id": "org/upstream", "revision": "v0.9"}],
        funnel={"stages": [{"stage": "augment", "rows_in": 12, "rows_out": 9, "tokens": 4567, "seconds": 12.5},
                           {"stage": "verify", "rows_in": 9, "rows_out": 0}], "plot": "funnel.png"},
        revision="v1.0", extra_sections={"Known issues": "Tiny demo run."})
    text = str(card)
    assert _table_rows(text, "| config | split | source | rows | distinct questions |") == [
        ["default", "train", "gsm8k", "7", "7"], ["default", "train", "math", "5", "5"],
        ["default", "test", "gsm8k", "2", "2"], ["math_only", "train", "math", "3", "3"],
        ["**total**", "", "", "**17**", "**17**"]]
    assert "Beside the paper" not in text and "Filter rules" not in text  # a seed card compares nothing
    assert _table_rows(text, "| stage | rows in |") == [["augment", "12", "9", "75.0%", "4,567", "12.5"],
                                                     ["verify", "9", "0", "0.0%", "-", "-"]]
    assert "![Rows kept at each stage](funnel.png)" in text
    assert 'load_dataset("org/mathgenie-seed", "default", revision="v1.0")' in text
    assert "cafe1234" in text and f"````text\n{PROMPT}\n````" in text and "top_p: 0.95" in text
    assert "| org/upstream | `v0.9` |" in text and "## Known issues" in text
    for key in ("lu2024mathgenie", "wang2024mathcoder", "cobbe2021gsm8k", "hendrycks2021math"):
        assert f"{{{key}," in text
    assert "**GSM8K**" in text and "**MATH**" in text and "license `mit`" in text

    data = card.data.to_dict()
    assert data["license"] == "mit" and data["size_categories"] == ["n<1K"] and data["language"] == ["en"]
    assert set(data["source_datasets"]) == {"openai/gsm8k", "EleutherAI/hendrycks_math", "org/upstream"}
    assert data["configs"][0] == {"config_name": "default", "data_files": [
        {"split": "train", "path": "default/train-*.parquet"}, {"split": "test", "path": "default/test-*.parquet"}]}
    info = {i["config_name"]: i for i in data["dataset_info"]}
    assert [(s["name"], s["num_examples"]) for s in info["default"]["splits"]] == [("train", 12), ("test", 2)]
    card.validate(repo_type="dataset")  # against our hub's /api/validate-yaml


def test_verified_card_states_the_rules_and_counts_questions_beside_the_paper():
    from mathgenie.cards import render_dataset_card
    from mathgenie.cards.common import paper_accuracy_note
    from mathgenie.generation.card_rules import filter_rules
    from mathgenie.generation.config import PipelineConfig, VerifyConfig

    # 3 solutions of one GSM8K question, 2 of another, 1 of a MATH question
    ds = datasets.Dataset.from_dict({"source": ["gsm8k"] * 5 + ["math"], "question": ["A?"] * 3 + ["B?"] * 2 + ["C?"]})
    cfg = PipelineConfig(verify=VerifyConfig(consistency="majority", keep_unknown=False))
    card = str(render_dataset_card(repo_id="o/v", stage="verified", configs={"default": datasets.DatasetDict(
        {"train": ds})}, filter_rules=filter_rules(cfg, "verify")))
    assert _table_rows(card, "| config | split | source | rows | distinct questions |") == [
        ["default", "train", "gsm8k", "5", "2"], ["default", "train", "math", "1", "1"],
        ["**total**", "", "", "**6**", "**3**"]]
    assert _table_rows(card, "| seed set | rows here |") == [
        ["gsm8k", "5", "2", "110,000"], ["math", "1", "1", "60,000"], ["**total**", "6", "3", "170,000"]]
    assert "Answer consistency (majority)" in card and "are **dropped**" in card and "284,000" in card
    default = filter_rules(PipelineConfig(), "verify")
    assert "unanimous" in default[0] and "**kept**" in default[2] and "majority" not in " ".join(default)
    assert "off" in filter_rules(PipelineConfig(verify=VerifyConfig(rationale=False)), "verify")[1]
    assert paper_accuracy_note(["gsm8k", "svamp", "math"]).endswith(
        "MathGenieLM-InternLM2-20B at GSM8K 87.7, MATH 55.7 (accuracy %, greedy, MathGenie Table 3), trained on "
        "MathGenieData (about 284K rows).")
    assert paper_accuracy_note(["svamp"]) == ""


def test_broken_dataset_cards_fail_validation(hub, seed_configs):
    from mathgenie.cards import render_dataset_card

    card = render_dataset_card(repo_id="o/d", stage="seed", configs=seed_configs)
    card.data["license"] = "free-for-all"
    with pytest.raises(ValueError, match="license"):
        card.validate(repo_type="dataset")
    card = render_dataset_card(repo_id="o/d", stage="seed", configs=seed_configs)
    card.data["size_categories"] = ["huge"]
    card.data["configs"][0]["data_files"] = [{"split": "train", "path": []}]
    with pytest.raises(ValueError) as e:
        card.validate(repo_type="dataset")
    assert "size_categories" in str(e.value) and "path" in str(e.value)


def test_model_card_metadata_and_eval_results(hub):
    from huggingface_hub import ModelCard

    from mathgenie.cards import render_model_card

    kwargs = dict(repo_id="org/MathGenieLM-tiny", base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
                  datasets=["org/mathgenie-verified@v1.0", {"repo_id": "org/seed", "revision": "abc123"}],
                  hyperparameters={"learning_rate": 2e-5, "num_train_epochs": 3, "hub_token": "hf_abc"},
                  train_summary={"train_loss": 0.41234, "global_step": 30,
                                 "loss_curve": [(i, 2.0 / (i + 1)) for i in range(1, 101)]})
    card = render_model_card(**kwargs)
    text = str(card)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert card.data.datasets == ["org/mathgenie-verified", "org/seed"]
    assert "| [org/mathgenie-verified](https://huggingface.co/datasets/org/mathgenie-verified) | `v1.0` |" in text
    assert "| learning_rate | `2e-05` |" in text and "| hub_token | `<redacted>` |" in text and "hf_abc" not in text
    assert "| train_loss | 0.4123 |" in text and "| 100 | 0.0198 |" in text  # the last loss point is kept
    assert len(_table_rows(text, "| step | loss |")) == 20
    assert "Not evaluated yet" in text and card.data.to_dict()["model-index"] == [
        {"name": "MathGenieLM-tiny", "results": []}]
    card.validate(repo_type="model")

    scored = render_model_card(**kwargs, eval_results=[
        {"dataset_type": "gsm8k", "dataset_name": "GSM8K", "dataset_split": "test", "metric_type": "accuracy",
         "metric_value": 0.25}])
    scored.validate(repo_type="model")
    reloaded = ModelCard(str(scored))
    assert [(r.dataset_name, r.metric_value) for r in reloaded.data.eval_results] == [("GSM8K", 0.25)]
    assert "| GSM8K | test | accuracy | 0.25 |" in str(scored)

    # huggingface_hub will not even build a card from this, so post the raw text
    broken = str(scored).replace("type: gsm8k", "typo: gsm8k")
    r = httpx.post(f"{hub.url}/api/validate-yaml", json={"content": broken, "repoType": "model"})
    assert r.status_code == 400 and "dataset needs 'type'" in r.json()["error"]


def test_cards_never_contain_the_token(hub, seed_configs):
    from mathgenie.cards import render_dataset_card, render_model_card

    token = os.environ["HF_TOKEN"]
    dcard = render_dataset_card(repo_id="o/d", stage="seed", configs=seed_configs,
                                params={"note": f"launched with {token}", "api_key": "sk-123"},
                                extra_sections={"Run": f"env HF_TOKEN={token}"})
    mcard = render_model_card(repo_id="o/m", base_model="b/m", datasets=["o/d"],
                              hyperparameters={"push_token": token, "note": token}, train_summary={"t": token})
    for text in (str(dcard), str(mcard)):
        assert token not in text and "<redacted>" in text
    assert "sk-123" not in str(dcard)


def test_card_of_an_empty_split_and_unknown_stage(hub):
    from mathgenie.cards import render_dataset_card

    empty = datasets.Dataset.from_dict({"id": [], "source": []},
                                       features=datasets.Features({"id": datasets.Value("string"),
                                                                   "source": datasets.Value("string")}))
    card = render_dataset_card(repo_id="o/d", stage="custom", configs={"c": datasets.DatasetDict({"train": empty})},
                               sources=[{"name": "mine", "license": "cc-by-4.0", "repo_id": "o/mine"}])
    assert "| c | train | - | 0 |" in str(card) and "**mine**" in str(card) and "license `cc-by-4.0`" in str(card)
    card.validate(repo_type="dataset")
    with pytest.raises(ValueError, match="empty"):
        render_dataset_card(repo_id="o/d", stage="seed", configs={})
