"""The LCE training mix and the M_code recipe: sources and weights come out as configured, a missing or unfit source
is an error naming it, verification samples carry the verify stage's own prompt with executions masked on real
tokenized D_code rows, the shipped configs hold the paper's mix, and M_code trains a few CPU steps on SmolLM2 and
plugs into the solve and verify stages through configs/pipeline.mcode.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_training import runs  # maximal runs of equal mask values, decoded

import datasets
from mathgenie import schema
from mathgenie.training.config import MathGenieLMConfig, MCodeConfig
from mathgenie.training.mix import parse_mix, weighted_indices

ROOT = Path(__file__).resolve().parents[1]
DCODE = ROOT / "tests" / "data" / "dcode"


@pytest.fixture(scope="module")
def lce_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    from mathgenie.training.lce import add_lce_tokens

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    add_lce_tokens(tok)
    return tok


def verified_rows(n: int) -> list[dict]:
    """Rows of the verified stage; every 5th has verdict "wrong", row 1 was cut by the length limit."""
    rows = []
    for i in range(n):
        a = 2 + i
        rows.append({
            "solution_id": f"q{i}/s0", "question_id": f"q{i}", "seed_id": f"gsm8k/train/{i}", "source": "gsm8k",
            "round": 1, "prompt_id": "1", "question": f"Ann has {a} pens and gets 3 more. How many pens?",
            "blocks": [schema.block("code", f"print({a} + 3)"), schema.block("execution", str(a + 3)),
                       schema.block("text", f"The answer is \\boxed{{{a + 3}}}.")],
            "answer": str(a + 3), "finish_reason": "length" if i == 1 else "endofmessage", "num_code_blocks": 1,
            "model": "m", "revision": "r", "agreement": 1.0,
            "verification": [schema.block("code", f"print({a} + 3 == {a + 3})"), schema.block("execution", "True"),
                             schema.block("text", "The solution is correct.")],
            "verdict": "wrong" if i % 5 == 4 else "correct", "verifier_model": "m", "verifier_revision": "r",
        })
    return rows


@pytest.fixture(scope="module")
def verified_dir(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("verified") / "verified"
    datasets.Dataset.from_list(verified_rows(20), features=schema.VERIFIED_FEATURES).save_to_disk(str(path))
    return str(path)


def paper_mix(verified: str, **weights) -> list[dict]:
    w = {"seed_solutions": 1.0, "seed_verifications": 1.0, "aug_solutions": 1.0, "aug_verifications": 0.0, **weights}
    return [
        {"name": "seed_solutions", "dataset": str(DCODE / "MATH-GSM8K-Tool-81K"), "format": "mathcoder",
         "kind": "solutions", "weight": w["seed_solutions"]},
        {"name": "seed_verifications", "dataset": str(DCODE / "MathGenieData"), "format": "mathcoder",
         "kind": "verifications", "weight": w["seed_verifications"]},
        {"name": "aug_solutions", "dataset": verified, "kind": "solutions", "weight": w["aug_solutions"]},
        {"name": "aug_verifications", "dataset": verified, "kind": "verifications", "weight": w["aug_verifications"]},
    ]


# ---------------------------------------------------------------------------------------------------------------------
# The mix
# ---------------------------------------------------------------------------------------------------------------------


def test_weights_pick_rows_as_configured():
    assert weighted_indices(10, 1.0, 0) == list(range(10))
    half = weighted_indices(10, 0.5, 0)
    assert len(half) == 5 and len(set(half)) == 5 and half == weighted_indices(10, 0.5, 0)  # seeded
    assert half != weighted_indices(10, 0.5, 1)
    twice = weighted_indices(10, 2.5, 0)
    assert len(twice) == 25 and all(twice.count(i) in (2, 3) for i in range(10))
    assert weighted_indices(10, 0.0, 0) == []


def test_mix_sample_counts_per_source(lce_tokenizer, verified_dir, tmp_path):
    from mathgenie.training.recipes import build_dataset

    config = MathGenieLMConfig(
        model_name_or_path="unused", output_dir=str(tmp_path), report_to="none", max_length=1024, use_cpu=True,
        mix=paper_mix(verified_dir, seed_verifications=2.0, aug_solutions=0.5, aug_verifications=1.0))
    train, sources = build_dataset(config, lce_tokenizer)
    got = {s.mix["name"]: (s.mix["kind"], s.num_rows, s.mix["samples"]) for s in sources}
    # verified: 20 rows, 4 "wrong" and 1 cut by length dropped -> 15 usable; D_code: 4 solutions, 3 rationales
    assert got == {"seed_solutions": ("solutions", 4, 4), "seed_verifications": ("verifications", 3, 6),
                   "aug_solutions": ("solutions", 20, 8), "aug_verifications": ("verifications", 20, 15)}
    assert len(train) == 4 + 6 + 8 + 15

    config.mix = paper_mix(verified_dir)  # the shipped weights: aug_verifications (0) is not loaded at all
    train, sources = build_dataset(config, lce_tokenizer)
    assert [s.mix["name"] for s in sources] == ["seed_solutions", "seed_verifications", "aug_solutions"]
    assert len(train) == 4 + 3 + 15


def test_missing_or_unfit_source_is_an_error_naming_it(lce_tokenizer, verified_dir, tmp_path):
    from mathgenie.training.recipes import build_dataset

    def build(mix):
        config = MathGenieLMConfig(model_name_or_path="unused", output_dir=str(tmp_path), report_to="none",
                                   use_cpu=True, mix=mix)
        return build_dataset(config, lce_tokenizer)

    mix = paper_mix(verified_dir)
    mix[2]["dataset"] = str(tmp_path / "no-such-verified")
    with pytest.raises(ValueError, match=r"mix source 'aug_solutions' \(dataset '.*no-such-verified'"):
        build(mix)
    mix = paper_mix(verified_dir)
    mix[1]["dataset"] = "nobody/no-such-dcode"  # a Hub id that the (local) Hub does not have
    with pytest.raises(ValueError, match="mix source 'seed_verifications'"):
        build(mix)
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"question": "q", "solution": "s"}\n')
    with pytest.raises(ValueError, match=r"dataset 'seed_text' lacks column\(s\) \['blocks'\]"):
        build([{"name": "seed_text", "dataset": str(plain), "kind": "solutions"}])


@pytest.mark.parametrize("entries, message", [
    ([{"name": "a", "dataset": "d", "wieght": 1}], r"mix\[0\] \('a'\): unknown field\(s\) \['wieght'\]"),
    ([{"name": "a", "dataset": "d", "kind": "rationales"}], "mix source 'a': kind='rationales'"),
    ([{"name": "a", "dataset": "d", "weight": -1}], "mix source 'a': weight=-1"),
    ([{"name": "a"}], r"mix\[0\] \('a'\): .*`name` and `dataset` are required"),
    ([{"name": "a", "dataset": "d"}, {"name": "a", "dataset": "e"}], "distinct"),
    ([{"name": "a", "dataset": "d", "weight": 0}], "weight 0"),
])
def test_bad_mix_entries(entries, message):
    with pytest.raises(ValueError, match=message):
        parse_mix(entries)


def test_shipped_configs_hold_the_papers_mix():
    from mathgenie.training.cli import parse_config

    lm = parse_config(str(ROOT / "configs" / "train_mathgenie_lm.yaml"))
    assert [(s.name, s.dataset, s.kind, s.format, s.weight) for s in lm.mix_sources()] == [
        ("seed_solutions", "MathGenie/MATH-GSM8K-Tool-81K", "solutions", "mathcoder", 1.0),
        ("seed_verifications", "MathGenie/MathGenieData", "verifications", "mathcoder", 1.0),
        ("aug_solutions", "your-org/mathgenie-verified", "solutions", "rows", 1.0),
        ("aug_verifications", "your-org/mathgenie-verified", "verifications", "rows", 0.0),
    ]
    mcode = parse_config(str(ROOT / "configs" / "train_mcode.yaml"))
    assert isinstance(mcode, MCodeConfig) and mcode.recipe == "mcode"
    assert [(s.kind, s.dataset) for s in mcode.mix_sources()] == [
        ("solutions", "MathGenie/MATH-GSM8K-Tool-81K"), ("verifications", "MathGenie/MathGenieData")]
    assert (mcode.learning_rate, mcode.max_length, mcode.global_batch_size, mcode.num_train_epochs) == (
        2e-5, 2048, 128, 3.0)
    with pytest.raises(ValueError, match="`mix` and `dataset_name`"):
        parse_config(str(ROOT / "configs" / "train_mathgenie_lm.yaml"), ["--dataset_name", "org/verified"])


# ---------------------------------------------------------------------------------------------------------------------
# M_code: masks on real rows, a few CPU steps, the pipeline config
# ---------------------------------------------------------------------------------------------------------------------


def test_mcode_masks_on_real_dcode_rows(lce_tokenizer):
    from mathgenie.builders.dcode import DCodeSource, build_dcode
    from mathgenie.generation.prompts import verify_prompt
    from mathgenie.training.data import lce_dataset

    dcode = build_dcode([DCodeSource("t", str(DCODE / "MATH-GSM8K-Tool-81K"), kinds=("solutions",)),
                         DCodeSource("m", str(DCODE / "MathGenieData"), kinds=("verifications",))])
    tok = lce_tokenizer
    solutions = lce_dataset(dcode["solutions"]["train"], tok, name="s", kind="solutions")
    verifications = lce_dataset(dcode["verifications"]["train"], tok, name="v", kind="verifications")

    got = runs(solutions[0]["input_ids"], solutions[0]["assistant_masks"], tok)
    assert got == [
        (0, "<|system|><|text|><|endofblock|><|endofmessage|><|user|><|text|>A baker fills 12 trays with 9 rolls "
            "each and sells 70 rolls. How many rolls are left?<|endofblock|><|endofmessage|><|assistant|>"),
        (1, "<|text|>First count the rolls, then subtract the ones sold.<|endofblock|><|code|>rolls = 12 * 9\n"
            "left = rolls - 70\nleft<|endofblock|>"),
        (0, "<|execution|>38<|endofblock|>"),
        (1, "<|text|>The baker has $\\boxed{38}$ rolls left.<|endofblock|><|endofmessage|>"),
    ]
    row = dcode["verifications"]["train"][2]
    got = runs(verifications[2]["input_ids"], verifications[2]["assistant_masks"], tok)
    prompt = verify_prompt(row["question"], row["solution"])  # exactly what the verify stage sends
    assert got == [
        (0, f"<|system|><|text|><|endofblock|><|endofmessage|><|user|><|text|>{prompt}<|endofblock|>"
            "<|endofmessage|><|assistant|>"),
        (1, "<|code|>from fractions import Fraction\nprint(Fraction(18, 24))<|endofblock|>"),
        (0, "<|execution|>3/4\n<|endofblock|>"),
        (1, "<|text|>The fraction reduces to 3/4, not 6/8; the solution is incorrect.<|endofblock|>"
            "<|endofmessage|>"),
    ]

    # a verified-stage row: its LCE solution goes into the prompt flattened, as the verify stage flattens it
    stage_row = verified_rows(1)[0]
    out = lce_dataset(datasets.Dataset.from_list([stage_row], features=schema.VERIFIED_FEATURES), tok, name="a",
                      kind="verifications")
    text = tok.decode(out[0]["input_ids"])
    assert verify_prompt(stage_row["question"], schema.blocks_to_plain_text(stage_row["blocks"])) in text


def _losses(checkpoint: Path) -> list[float]:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


@pytest.mark.slow
def test_mcode_trains_on_smollm2_and_plugs_into_solve_and_verify(smollm2_dir, tmp_path):
    from transformers import AutoTokenizer

    from mathgenie.generation.config import load_config
    from mathgenie.training.cli import parse_config
    from mathgenie.training.recipes import train

    shipped = parse_config(str(ROOT / "configs" / "train_mcode.yaml"))
    mix = [{**s.to_dict(), "dataset": str(DCODE / Path(s.dataset).name)} for s in shipped.mix_sources()]
    config = MCodeConfig(
        model_name_or_path=str(smollm2_dir), mix=mix, output_dir=str(tmp_path / "mcode"), max_steps=8,
        learning_rate=2e-4, warmup_steps=0, lr_scheduler_type="constant", logging_steps=1, save_steps=8,
        max_length=256, per_device_train_batch_size=1, global_batch_size=None, gradient_accumulation_steps=1,
        gradient_checkpointing=False, report_to="none", dataloader_num_workers=0, disable_tqdm=True, seed=0,
        use_cpu=True)
    result = train(config)

    # 7 samples (831 tokens) packed into 4 rows of <= 256 tokens: steps 1-4 and 5-8 are two epochs over the same rows
    losses = _losses(tmp_path / "mcode" / "checkpoint-8")
    assert len(losses) == 8 and sum(losses[4:]) < sum(losses[:4]) - 0.5, losses
    info = json.loads((result.model_dir / "mathgenie_training.json").read_text())
    assert info["recipe"] == "mcode"
    assert [(d["mix"]["name"], d["mix"]["samples"]) for d in info["datasets"]] == [
        ("seed_solutions", 4), ("seed_verifications", 3)]
    tok = AutoTokenizer.from_pretrained(result.model_dir)
    assert tok.chat_template == schema.CHAT_TEMPLATE

    # configs/pipeline.mcode.yaml: solve and verify use this model, in the format and system prompt it learned
    pipeline = load_config(ROOT / "configs" / "pipeline.mcode.yaml")
    from mathgenie.generation.stage import model_for
    from mathgenie.generation.stages import stage_named

    solver, verifier = model_for(pipeline, stage_named("solve")), model_for(pipeline, stage_named("verify"))
    assert solver.model == str(Path(shipped.output_dir) / "model") and verifier is solver
    assert (pipeline.solve.format, pipeline.solve.system, pipeline.solve.few_shot) == (
        "lce", shipped.system_prompt, False)
    assert solver.max_model_len == shipped.max_length
