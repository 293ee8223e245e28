"""D_code, the code-integrated seed: the builder reads samples in the published MathGenie layout (tests/data/dcode)
from local files and from the (local) Hub at the paper's repo ids, into LCE solution rows and (question, solution) →
verification rows; malformed records name their file, line and field; the built configs push and load back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mathgenie import schema
from mathgenie.builders.dcode import (
    PAPER_SOURCES,
    SOLUTION_FEATURES,
    VERIFICATION_FEATURES,
    DCodeSource,
    SeedFormatError,
    build_dcode,
)

DATA = Path(__file__).parent / "data" / "dcode"
TOOL_81K = DATA / "MATH-GSM8K-Tool-81K"
MATHGENIE_DATA = DATA / "MathGenieData"


def local_sources(split: str = "train") -> list[DCodeSource]:
    return [DCodeSource("tool81k", str(TOOL_81K), split=split, kinds=("solutions",)),
            DCodeSource("mathgeniedata", str(MATHGENIE_DATA), kinds=("verifications",))]


def test_local_samples_become_lce_rows():
    dcode = build_dcode(local_sources())
    solutions, verifications = dcode["solutions"]["train"], dcode["verifications"]["train"]
    assert solutions.features == SOLUTION_FEATURES and verifications.features == VERIFICATION_FEATURES

    assert solutions["id"] == [f"tool81k/train/{i}" for i in range(4)]
    assert solutions["answer"] == ["38", "7", "49", "\\frac{3}{4}"]
    first = solutions[0]
    assert first["question"].startswith("A baker fills 12 trays")
    assert [b["type"] for b in first["blocks"]] == ["text", "code", "execution", "text"]
    assert first["blocks"][2]["content"] == "38" and first["num_code_blocks"] == 1
    # each row renders to the LCE conversation the solver is trained on
    messages = schema.to_messages(first)
    assert schema.parse_conversation(schema.render_conversation(messages)) == messages

    # MathGenieData: only its verification rows (lines 2, 5, 6), split into the prompt's question and solution
    assert verifications["id"] == ["mathgeniedata/train/1", "mathgeniedata/train/4", "mathgeniedata/train/5"]
    v = verifications[1]
    assert v["question"] == "What is the sum of the roots of $x^2 - 7x + 10 = 0$?"
    assert v["solution"].startswith("By Vieta's formulas") and v["solution"].endswith("The sum is $\\boxed{7}$.")
    assert "Please use code to verify" not in v["solution"]
    assert [b["type"] for b in v["verification"]] == ["text", "code", "execution", "text"]
    assert verifications[2]["verification"][-1]["content"].endswith("the solution is incorrect.")

    test_split = build_dcode(local_sources("test"), kinds=("solutions",))["solutions"]
    assert list(test_split) == ["test"] and test_split["test"]["answer"] == ["53"]
    assert build_dcode(local_sources(), limit=2)["solutions"]["train"].num_rows == 2


@pytest.mark.parametrize("record, field", [
    ({"messages": [{"role": "user", "content": [{"type": "text", "content": "q"}]}]}, "messages"),
    ({"messages": [{"role": "user", "content": "Please use code. Above is a math problem and its solution. Please "
                    "use code to verify the solution above."},
                   {"role": "assistant", "content": [{"type": "text", "content": "ok"}]}]}, "messages[user].content"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "content": [{"type": "output", "content": "1"}]}]},
     "messages[assistant].content[0]"),
    ({"question": "q"}, "messages"),
])
def test_malformed_records_name_file_line_and_field(tmp_path, record, field):
    good = json.loads((TOOL_81K / "data/train/math_gsm8k_train.jsonl").read_text().splitlines()[0])
    path = tmp_path / "data" / "train" / "x_train.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(SeedFormatError) as e:
        build_dcode([DCodeSource("x", str(tmp_path))])
    assert (e.value.file, e.value.line, e.value.field) == (str(path), 2, field)


def test_missing_source_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="D_code source 'gone'"):
        build_dcode([DCodeSource("gone", str(tmp_path / "nope"))])
    with pytest.raises(FileNotFoundError, match="no .jsonl file of split 'validation'"):
        build_dcode([DCodeSource("t", str(TOOL_81K), split="validation")])


def test_dcode_from_the_hub_and_pushed_back(hub, tmp_path):
    """The samples uploaded at the paper's repo ids, in their layout: `PAPER_SOURCES` (the shipped default) builds
    the same rows as the local files; `mathgenie seed --dcode` (its defaults are those repos) writes and pushes the
    two configs with a card, and they load back at the tag."""
    import datasets
    from huggingface_hub import DatasetCard, HfApi

    from mathgenie.cli import main

    api = HfApi()
    for source, folder in zip(PAPER_SOURCES, (TOOL_81K, MATHGENIE_DATA)):
        api.create_repo(source.path_or_repo, repo_type="dataset", exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=source.path_or_repo, repo_type="dataset")

    from_hub = build_dcode(PAPER_SOURCES)
    local = build_dcode(local_sources())
    for kind in ("solutions", "verifications"):
        assert from_hub[kind]["train"].to_list() == local[kind]["train"].to_list()

    out = tmp_path / "dcode"
    assert main(["seed", "--dcode", "--output", str(out), "--push", "org/mathgenie-dcode", "--tag", "v1"]) == 0
    for kind in ("solutions", "verifications"):
        pushed = datasets.load_dataset("org/mathgenie-dcode", kind, split="train", revision="v1")
        assert pushed.to_list() == local[kind]["train"].to_list()
        written = datasets.Dataset.from_parquet(str(out / kind / "default" / "train" / "part-00000-of-00001.parquet"))
        assert written.to_list() == pushed.to_list()
        manifest = json.loads((out / kind / "manifest-00000-of-00001.json").read_text())
        assert (manifest["stage"], manifest["config"]) == ("dcode", kind)
    card = DatasetCard.load("org/mathgenie-dcode", repo_type="dataset")
    assert card.data.license == "apache-2.0" and "MathGenie/MATH-GSM8K-Tool-81K" in card.data.source_datasets

    # the training mix reads the pushed configs (format `rows`) like the published layout (format `mathcoder`)
    from mathgenie.training.data import load_mix_source
    from mathgenie.training.mix import MixSource

    for fmt, dataset, config in (("rows", "org/mathgenie-dcode", "verifications"),
                                 ("mathcoder", "MathGenie/MathGenieData", None)):
        rows, source = load_mix_source(MixSource("seed_verifications", dataset, kind="verifications", config=config,
                                                 format=fmt))
        content = ["question", "solution", "verification"]  # ids are named after the mix source with `mathcoder`
        expected = local["verifications"]["train"].select_columns(content).to_list()
        assert rows.select_columns(content).to_list() == expected
        assert source.revision == api.dataset_info(dataset).sha
