"""Evaluation: benchmark loaders, scoring checks that can fail, the `evaluate` metric, maj@k and verified inference
control flow, the model card's model-index, and an end-to-end run of SmolLM2 on every benchmark."""

from __future__ import annotations

import json
import random
import re
from fractions import Fraction

import datasets
import pytest

from mathgenie.answers import extract_answer
from mathgenie.evaluation.benchmarks import BENCHMARKS, BenchmarkFormatError, load_benchmark
from mathgenie.evaluation.scoring import accuracy_table, format_table, majority_vote, score

SIZES = {"gsm8k": 1319, "math": 5000, "math500": 500, "svamp": 1000, "simuleq": 514, "mathematics": 1000}
ROWS_PER_BENCHMARK = 300


@pytest.fixture(scope="module")
def benchmarks(real_data):
    return {name: load_benchmark(name, data_dir=real_data) for name in BENCHMARKS}


# ---------------------------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------------------------


def test_every_benchmark_loads_with_the_papers_size_and_normalized_fields(benchmarks):
    for name, ds in benchmarks.items():
        assert len(ds) == SIZES[name], name
        assert ds.column_names == ["id", "benchmark", "question", "answer", "level", "type"]
        assert all(q.strip() for q in ds["question"]) and all(a.strip() for a in ds["answer"])
        assert len(set(ds["id"])) == len(ds), f"{name}: ids are not unique"
    math = benchmarks["math"]
    assert set(math["level"]) == {1, 2, 3, 4, 5}
    assert set(math["type"]) == {"Algebra", "Counting & Probability", "Geometry", "Intermediate Algebra",
                                 "Number Theory", "Prealgebra", "Precalculus"}
    assert set(benchmarks["math500"]["type"]) == set(math["type"])
    assert set(benchmarks["gsm8k"]["type"]) == {None}
    # SVAMP: MathCoder's prompt string "Body, Question"
    assert benchmarks["svamp"][0]["question"].endswith("on each pack, How much do you have to pay to buy each pack?")


def test_upstream_record_shapes_are_normalized(tmp_path):
    rows = [
        {"id": "1", "messages": [{"role": "system", "content": [{"type": "text", "content": "Solve."}]},
                                 {"role": "user", "content": [{"type": "text", "content": "What is 2+3?"}]}],
         "ground_truth": {"solution": "", "answer": "5"}},  # MathCoder *_test_post.jsonl
        {"question": "Tom has 3 apples...", "answer": "He has 3+4=7.\n#### 1,007"},  # GSM8K original
        {"problem": "Find x.", "solution": "So $x=\\boxed{\\frac{1}{2}}$.", "level": "Level 2", "type": "Algebra"},
        {"ID": "chal-7", "Body": "Dan had 5 apples", "Question": "How many now?", "Answer": 4.0},  # SVAMP
    ]
    (tmp_path / "math").mkdir()
    (tmp_path / "math" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds = load_benchmark("math", data_dir=tmp_path)
    assert ds["question"] == ["What is 2+3?", "Tom has 3 apples...", "Find x.", "Dan had 5 apples, How many now?"]
    assert ds["answer"] == ["5", "1007", "\\frac{1}{2}", "4"]
    assert ds["level"] == [None, None, 2, None] and ds["type"] == [None, None, "Algebra", None]
    assert ds["id"] == ["1", "math/test/1", "math/test/2", "chal-7"]


def test_bad_benchmark_record_names_file_row_and_field(tmp_path):
    (tmp_path / "gsm8k.jsonl").write_text(json.dumps({"question": "Q1", "answer": "3"}) + "\n"
                                          + json.dumps({"question": "Q2"}) + "\n")
    with pytest.raises(BenchmarkFormatError, match=r"gsm8k.jsonl, row 2, field 'answer'"):
        load_benchmark("gsm8k", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="svamp/test.jsonl"):
        load_benchmark("svamp", data_dir=tmp_path)
    with pytest.raises(KeyError, match="unknown benchmark 'gsm9k'"):
        load_benchmark("gsm9k")


def test_benchmarks_load_from_the_hub_by_repo_id(hub, real_data):
    """openai/gsm8k (config main, '#### answer') and HuggingFaceH4/MATH-500 shapes, served by the local Hub (under
    other repo ids, so no other test sees them)."""
    from mathgenie.upload import push_dataset

    gsm = [json.loads(line) for line in (real_data / "gsm8k" / "test.jsonl").open()][:5]
    gsm_hub = datasets.Dataset.from_list([{"question": r["question"], "answer": f"{r['solution']}\n#### {r['answer']}"}
                                          for r in gsm])
    push_dataset({"main": datasets.DatasetDict({"test": gsm_hub})}, "evaltest/gsm8k")
    m500 = [json.loads(line) for line in (real_data / "math500" / "test.jsonl").open()][:4]
    m500_hub = datasets.Dataset.from_list([{"problem": r["question"], "solution": r["solution"], "answer": r["answer"],
                                            "subject": r["subject"], "level": r["level"], "unique_id": r["id"]}
                                           for r in m500])
    push_dataset({"default": datasets.DatasetDict({"test": m500_hub})}, "evaltest/MATH-500")

    ds = load_benchmark("gsm8k", source="evaltest/gsm8k")
    assert ds["answer"] == [r["answer"] for r in gsm] and ds["question"] == [r["question"] for r in gsm]
    ds = load_benchmark("math500", source="evaltest/MATH-500")
    assert ds["id"] == [r["id"] for r in m500] and ds["type"][0] == "Precalculus" and ds["level"][0] == 2


# ---------------------------------------------------------------------------------------------------------------------
# Scoring: gold answers in other valid forms score 100%; answers shifted to other problems score ~0%
# ---------------------------------------------------------------------------------------------------------------------

_INT = re.compile(r"^-?\d+$")
_DEC = re.compile(r"^-?\d+\.\d+$")
_FRAC = re.compile(r"^(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}$")


def rewrite(gold: str, rng: random.Random) -> str:
    """``gold`` in another form a model could write: 18 -> 18.00 / 18 dollars / $18$; 3.5 -> 7/2; \\frac{1}{2} ->
    0.5 / \\dfrac{1}{2} / 1/2; anything else with its LaTeX spelling changed (\\left( -> (, spaces, $...$)."""
    s = gold.strip()
    if _INT.match(s):
        n = int(s)
        return rng.choice([f"{n}.0", f"{n}.00", f"${n}$", f"{n} dollars"] + ([f"{n:,}"] if abs(n) >= 1000 else []))
    if _DEC.match(s):
        f = Fraction(s)
        return rng.choice([s + "0", f"\\frac{{{f.numerator}}}{{{f.denominator}}}", f"{f.numerator}/{f.denominator}"])
    if m := _FRAC.match(s):
        sign, a, b = m.groups()
        forms = [f"{sign}\\dfrac{{{a}}}{{{b}}}", f"{sign}{a}/{b}", f"{sign}\\tfrac{{{a}}}{{{b}}}"]
        value = Fraction(int(a), int(b)) * (-1 if sign else 1)
        if 10**6 % value.denominator == 0:
            forms.append(str(float(value)))
        return rng.choice(forms)
    return rng.choice([f"${s}$", s.replace("\\dfrac", "\\frac").replace("\\left(", "(").replace("\\right)", ")"),
                       re.sub(r",\s*", ", ", s), s.replace(" ", "")])


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_gold_answers_in_other_forms_score_100_and_shifted_answers_score_about_0(benchmarks, name):
    ds = benchmarks[name].select(range(ROWS_PER_BENCHMARK))
    gold = ds["answer"]
    rng = random.Random(name)
    outputs = [f"Let me compute it step by step.\nSo the answer is $\\boxed{{{rewrite(g, rng)}}}$." for g in gold]
    rewritten = score([extract_answer(o) for o in outputs], gold)
    assert sum(rewritten) == len(gold), [(g, o) for g, o, ok in zip(gold, outputs, rewritten) if not ok][:5]
    shifted = score(gold[1:] + gold[:1], gold)
    same_text = sum(a.strip() == b.strip() for a, b in zip(gold[1:] + gold[:1], gold))
    assert sum(shifted) / len(gold) < 0.05, "answers of other problems must not count as correct"
    assert sum(shifted) >= same_text  # identical answers of neighbouring problems are (rightly) correct


def test_metric_module_loads_offline_and_scores(benchmarks, monkeypatch):
    import evaluate

    from mathgenie.evaluation import METRIC_PATH

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(METRIC_PATH)
    gold = benchmarks["math500"]["answer"][:60] + benchmarks["gsm8k"]["answer"][:60]
    rng = random.Random(1)
    preds = [f"The answer is $\\boxed{{{rewrite(g, rng)}}}$." for g in gold]
    assert metric.compute(predictions=preds, references=gold)["accuracy"] == 1.0
    out = metric.compute(predictions=preds[1:] + preds[:1], references=gold)
    assert out["accuracy"] < 0.05 and out["total"] == 120
    out = metric.compute(predictions=["18", "", "The answer is: 7"], references=["18", "3", "8"])
    assert out == {"accuracy": 1 / 3, "correct": 1, "total": 3, "no_answer": 1}


def test_accuracy_table_per_subject_and_level():
    rows = [{"benchmark": "math", "type": "Algebra", "level": 1, "correct": True, "answer_pred": "1"},
            {"benchmark": "math", "type": "Algebra", "level": 5, "correct": False, "answer_pred": None},
            {"benchmark": "math", "type": "Geometry", "level": 5, "correct": True, "answer_pred": "2"},
            {"benchmark": "gsm8k", "type": None, "level": None, "correct": False, "answer_pred": "3"}]
    table = accuracy_table(rows)
    assert table["math"].accuracy == pytest.approx(2 / 3) and table["math"].no_answer == 1
    assert table["math"].by_subject["Algebra"] == {"accuracy": 0.5, "correct": 1, "total": 2}
    assert table["math"].by_level["Level 5"]["total"] == 2 and table["gsm8k"].by_subject == {}
    md = format_table(table, titles={"math": "MATH"})
    assert "| MATH | 66.7 | 2 / 3 | 1 |" in md and "| **average** | **33.3** |" in md and "| Level 1 | 100.0" in md
    rows.append({"benchmark": "math500", "type": "Algebra", "level": 1, "correct": True, "answer_pred": "1"})
    md = format_table(accuracy_table(rows))  # MATH-500 is a subset of MATH: not averaged with it
    assert "| **average** (without MATH-500) | **33.3** |" in md


def test_majority_vote():
    assert majority_vote(["4", "5", "4.0", None, "5"]) in ("4", "5")  # normalized votes; a tie goes to the first seen
    assert majority_vote(["\\frac{1}{2}", "7", "\\dfrac{1}{2}"]) == "\\frac{1}{2}"
    assert majority_vote([None, None]) is None


# ---------------------------------------------------------------------------------------------------------------------
# maj@k and verified inference (control flow: scripted engine, real Sandbox)
# ---------------------------------------------------------------------------------------------------------------------


def test_maj_at_k_and_verified_inference_control_flow(tmp_path):
    from _scripted import ScriptedEngine

    from mathgenie.evaluation.run import EvalConfig, infer
    from mathgenie.execution import Sandbox

    def respond(prompt: str, params) -> str:
        verifying = "verify the solution" in prompt
        assistant = prompt.rsplit("<|assistant|>", 1)[-1]
        if assistant.endswith("<|endofblock|>") and assistant.rfind("<|text|>") > assistant.rfind("<|execution|>"):
            return "<|endofmessage|>"  # after its final text block the model ends the message
        if "<|execution|>" in assistant:
            out = assistant.rsplit("<|execution|>", 1)[-1].split("<|endofblock|>")[0].strip()
            if verifying:
                return f"<|text|>The solution is {'wrong' if out == 'False' else 'correct'}.<|endofblock|>"
            return f"<|text|>The answer is $\\boxed{{{out}}}$.<|endofblock|>"
        if verifying:  # the verifier's code checks whether the solution's answer is 4
            answer = re.findall(r"boxed\{(\d+)\}", prompt.split("<|assistant|>")[0])[-1]
            return f"<|code|>print({answer} == 4)<|endofblock|>"
        if params.temperature == 0:
            return "<|code|>print(2 + 3)<|endofblock|>"  # greedy: a wrong answer (5)
        return "<|code|>print(2 + 2)<|endofblock|>" if (params.seed or 0) % 3 else "<|code|>print(7)<|endofblock|>"

    engine = ScriptedEngine(respond)
    questions, ids = ["What is 2 + 2?"], ["q0"]
    with Sandbox(timeout=10) as sandbox:
        maj = infer(engine, questions, ids, sandbox, EvalConfig(n=5, temperature=0.7, data_dir=str(tmp_path)))[0]
        assert len(maj["sample_answers"]) == 5 and maj["generations"] == 5
        assert maj["answer_pred"] == majority_vote(maj["sample_answers"])
        greedy = infer(engine, questions, ids, sandbox, EvalConfig())[0]
        assert greedy["answer_pred"] == "5" and greedy["generations"] == 1 and greedy["num_code_blocks"] == 1
        assert [b["type"] for b in greedy["blocks"]] == ["code", "execution", "text"]
        verified = infer(engine, questions, ids, sandbox, EvalConfig(verify_rounds=3))[0]
    # round 1 rejects 5; re-solves are sampled (4 or 7) and verified again until one is accepted or 3 rounds pass
    answers, verdicts = verified["sample_answers"], verified["verdicts"]
    assert answers[0] == "5" and verdicts[0] == "wrong" and 1 <= len(verdicts) <= 3
    assert all(v == "wrong" for v in verdicts[:-1]) and verified["answer_pred"] == answers[-1]
    assert verified["generations"] == len(answers) + len(verdicts)  # every solve and every verification counts
    assert (verdicts[-1] == "correct") == (answers[-1] == "4" and len(answers) == len(verdicts))
    assert verified["verification"][0]["type"] == "code"


def test_eval_config_rejects_contradictory_settings():
    from mathgenie.evaluation.run import EvalConfig, EvalConfigError

    with pytest.raises(EvalConfigError, match="temperature=0"):
        EvalConfig(n=4)
    with pytest.raises(EvalConfigError, match="choose one"):
        EvalConfig(n=4, temperature=0.7, verify_rounds=2)
    with pytest.raises(EvalConfigError, match="unknown benchmark"):
        EvalConfig(benchmarks=["gsm8k", "aime"])
    assert EvalConfig(benchmarks="gsm8k,svamp").benchmarks == ["gsm8k", "svamp"]
    with pytest.raises(EvalConfigError, match="round_decimals=-1"):
        EvalConfig(round_decimals=-1)


def test_eval_cli_rounds_like_mathcoder_unless_told_not_to():
    import argparse

    from mathgenie.evaluation.cli import add_parser, config_from_args

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    assert config_from_args(parser.parse_args(["eval", "--model", "m"])).round_decimals == 6
    assert config_from_args(parser.parse_args(["eval", "--model", "m", "--round-decimals", "none"])).round_decimals \
        is None
    assert config_from_args(parser.parse_args(["eval", "--model", "m", "--round-decimals", "4"])).round_decimals == 4


# ---------------------------------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------------------------------


def _fake_run(values: dict[str, float], cfg):
    from mathgenie.evaluation.run import EvalRun
    from mathgenie.evaluation.scoring import BenchmarkScore

    scores = {k: BenchmarkScore(k, v, int(v * 10), 10) for k, v in values.items()}
    return EvalRun(scores, datasets.DatasetDict(), format_table(scores), {"resolved_revision": "abc123"})


def test_model_card_update_merges_the_model_index_and_replaces_its_section():
    from huggingface_hub import ModelCard

    from mathgenie.cards import render_model_card
    from mathgenie.evaluation.model_card import SECTION_START, update_card
    from mathgenie.evaluation.run import EvalConfig

    card = render_model_card(repo_id="org/m", base_model="base/model", datasets=["org/data@v1"],
                             hyperparameters={"learning_rate": 2e-5},
                             eval_results=[{"dataset_type": "other/bench", "dataset_name": "Other",
                                            "metric_type": "accuracy", "metric_value": 50.0}])
    greedy = EvalConfig(benchmarks=["gsm8k", "math"])
    first = update_card(card, _fake_run({"gsm8k": 0.5, "math": 0.2}, greedy), greedy, "org/m")
    again = update_card(first, _fake_run({"gsm8k": 0.7, "math": 0.3}, greedy), greedy, "org/m")
    maj = EvalConfig(benchmarks=["gsm8k"], n=4, temperature=0.7)
    both = ModelCard(str(update_card(again, _fake_run({"gsm8k": 0.8}, maj), maj, "org/m")))  # reparsed
    entries = {(r.dataset_name, r.metric_name): r.metric_value for r in both.data.eval_results}
    assert entries == {("Other", None): 50.0, ("GSM8K", "accuracy (greedy)"): 70.0,
                       ("MATH", "accuracy (greedy)"): 30.0, ("GSM8K", "accuracy (maj@4)"): 80.0}
    assert str(both).count(SECTION_START) == 1 and "base/model" in str(both)
    gsm = next(r for r in both.data.eval_results if r.dataset_name == "GSM8K")
    assert (gsm.dataset_type, gsm.dataset_config, gsm.dataset_split) == ("openai/gsm8k", "main", "test")


@pytest.mark.slow
@pytest.mark.engine
def test_end_to_end_smollm2_on_every_benchmark_pushes_results_into_the_model_card(hub, real_data, tmp_path):
    """SmolLM2-135M on one question of each benchmark: Hub model repo -> transformers engine -> LCE loop with the
    real Sandbox -> scores -> predictions dataset and model card on the local Hub. The model scores ~0; this checks
    the pipeline and the card, not accuracy."""
    from huggingface_hub import HfApi, ModelCard

    from mathgenie.cards import render_model_card
    from mathgenie.cli import main
    from mathgenie.generation.models import smollm2_checkpoint
    from mathgenie.upload import push_model

    repo, predictions_repo = "mathgenie-test/smollm2-eval", "mathgenie-test/smollm2-eval-predictions"
    card = render_model_card(repo_id=repo, base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
                             datasets=["org/mathgenie-verified@v1"], hyperparameters={"learning_rate": 2e-5})
    pushed = push_model(smollm2_checkpoint(), repo, card=card, tag="v1")
    out = tmp_path / "eval"
    assert main(["eval", "--model", repo, "--revision", "v1", "--backend", "transformers", "--data-dir",
                 str(real_data), "--limit", "1", "--max-tokens", "24", "--max-blocks", "2", "--output-dir",
                 str(out), "--push-card", "--push-predictions", predictions_repo]) == 0

    results = json.loads((out / "results.json").read_text())
    assert list(results["scores"]) == list(BENCHMARKS) and results["resolved_revision"] == pushed.commit_sha
    assert all(s["total"] == 1 and 0 <= s["accuracy"] <= 1 for s in results["scores"].values())
    for name in BENCHMARKS:
        preds = datasets.Dataset.from_parquet(str(out / "predictions" / f"{name}.parquet"))
        assert len(preds) == 1 and preds[0]["blocks"] and preds[0]["revision"] == pushed.commit_sha
        assert preds[0]["finish_reason"] in ("endofmessage", "max_blocks", "length", "error")
    hub_preds = datasets.load_dataset(predictions_repo, "mathematics", split="test")
    assert hub_preds[0]["question"] == load_benchmark("mathematics", data_dir=real_data)[0]["question"]

    commits = [c.commit_id for c in HfApi().list_repo_commits(repo)]
    assert commits[1] == pushed.commit_sha  # the card update is one new commit on top of the pushed model
    fresh = ModelCard.load(repo)
    entries = {(r.dataset_name, r.metric_name): r for r in fresh.data.eval_results}  # both scorers
    assert {name for name, _ in entries} == {b.title for b in BENCHMARKS.values()}
    plain, mathcoder = "accuracy (greedy, first 1)", "accuracy (greedy, first 1, MathCoder scorer)"
    assert {metric for _, metric in entries} == {plain, mathcoder}
    assert entries["GSM8K", plain].metric_value == 100 * results["scores"]["gsm8k"]["accuracy"]
    assert entries["GSM8K", mathcoder].metric_value == \
        100 * results["scores_by_scorer"]["mathcoder"]["gsm8k"]["accuracy"]
    assert "mathgenie-eval:start" in fresh.text and fresh.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
