"""Control flow of each stage with a scripted engine (the real engine runs them in test_pipeline.py), the real
Sandbox for the LCE loop, the verdict rule, dedup, ids and lineage, config loading, the request cache."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import datasets
import pytest
from _scripted import ScriptedEngine

from mathgenie import schema
from mathgenie.config import ConfigError
from mathgenie.generation import code_loop, prompts
from mathgenie.generation.cache import RequestCache, derive_seed, make_request, run_requests
from mathgenie.generation.config import AugmentConfig, BackTranslateConfig, SolveConfig, VerifyConfig, load_config
from mathgenie.generation.engine import Completion, SamplingParams
from mathgenie.generation.funnel import StageStats
from mathgenie.generation.stage import model_for
from mathgenie.generation.stages import STAGES, augment, back_translate, metamath, solve, verify

SEEDS = [
    {"id": "gsm8k/train/0", "source": "gsm8k", "question": "Tom has 3 apples and buys 4 more. How many now?",
     "solution": "Tom has 3 + 4 = 7 apples.\n#### 7", "answer": "7", "level": None, "type": None},
    {"id": "math/train/algebra/1", "source": "math", "question": "Solve $2x + 6 = 10$ for $x$.",
     "solution": "Subtract 6 and divide by 2: $x = \\boxed{2}$.", "answer": "2", "level": 2, "type": "Algebra"},
]


def seed_dataset() -> datasets.Dataset:
    return datasets.Dataset.from_list(SEEDS, features=schema.SEED_FEATURES)


def h(*parts) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:8]


def unique_rewrite(prompt: str, params: SamplingParams) -> str:
    """A distinct rewrite per (prompt, seed) that quotes the solution it rewrites, so lineage is visible."""
    solution = prompt.split("Solution:\n", 1)[1].split("\n")[0]
    return f"New solution: [{h(prompt, params.seed)}] rewritten from <{solution[:40]}> with several new words here"


# ---------------------------------------------------------------------------------------------------------------------
# augment
# ---------------------------------------------------------------------------------------------------------------------


class TestAugment:
    def test_rounds_rewrite_the_previous_round_and_keep_lineage(self):
        engine = ScriptedEngine(unique_rewrite)
        stats = StageStats()
        cfg = AugmentConfig(rounds=2, prompts_per_solution=2, n=1)
        out = augment.run(seed_dataset(), cfg, engine, stats=stats).to_list()
        assert len(out) == 2 * (2 + 4) and stats.rows_in == 2 and stats.rows_out == 12
        by_id = {r["id"]: r for r in out}
        seed_solutions = {s["solution"] for s in SEEDS}
        for r in out:
            assert r["solution"] not in seed_solutions  # the originals are not part of S^Aug
            assert not r["solution"].startswith("New solution")  # the label is stripped
            assert r["id"] == f"{r['parent_id']}/r{r['round']}/p{r['prompt_id']}/0"
            if r["round"] == 1:
                assert r["parent_id"] == r["seed_id"]
            else:  # round 2 rewrites a kept round-1 output of the same seed, and its prompt quoted that output
                parent = by_id[r["parent_id"]]
                assert parent["round"] == 1 and parent["seed_id"] == r["seed_id"]
                assert f"<{parent['solution'][:40]}>" in r["solution"]
        # two distinct Table 1 prompts per solution and round, chosen by hash (stable across calls)
        assert {r["prompt_id"] for r in out} <= {"1", "2", "3", "4"}
        again = augment.run(seed_dataset(), cfg, ScriptedEngine(unique_rewrite)).to_list()
        assert again == out

    def test_prompts_are_table1_verbatim(self):
        engine = ScriptedEngine(unique_rewrite)
        augment.run(seed_dataset().select([0]), AugmentConfig(rounds=1, prompts_per_solution=None), engine)
        assert len(engine.prompts) == 4
        assert any("You must change the numbers in the Solution to create a new solution." in p for p in engine.prompts)
        assert all(SEEDS[0]["solution"] in p for p in engine.prompts)

    def test_exact_and_near_duplicates_within_a_family_are_dropped(self):
        # every rewrite of a seed is the same 30 words up to the last one (3-gram Jaccard 0.93): 1 kept per family
        def near(prompt, params):
            return ("To find the total we add the apples Tom had to the apples he bought, which is three plus four, "
                    f"and that sum gives seven apples in the end for Tom today {h(params.seed)}")

        stats = StageStats()
        out = augment.run(seed_dataset(), AugmentConfig(rounds=1, prompts_per_solution=None, n=2), ScriptedEngine(near),
                          stats=stats)
        assert len(out) == 2  # one per family: families are separate, so the other seed keeps its copy
        assert stats.dropped == {"duplicate": 14}
        exact_only = augment.run(seed_dataset(), AugmentConfig(rounds=1, prompts_per_solution=None, n=2,
                                                               dedup_threshold=1.0), ScriptedEngine(near))
        assert len(exact_only) == 4  # two seeds (n=2) differ in their last word; equal texts of a family are dropped

    def test_copy_of_the_seed_short_and_truncated_outputs_are_dropped(self):
        def respond(prompt, params):
            if "change the numbers" in prompt:
                return prompt.split("Solution:\n", 1)[1].split("\nYou must")[0]  # the seed itself
            if "extra step" in prompt:
                return "ok"
            if "objects and verbs" in prompt:
                return "word " * 600
            return f"A real rewrite of the solution {h(prompt)} with enough words."

        stats = StageStats()
        out = augment.run(seed_dataset(), AugmentConfig(rounds=1, prompts_per_solution=None, max_tokens=512),
                          ScriptedEngine(respond), stats=stats)
        assert len(out) == 2 and {r["prompt_id"] for r in out} == {"4"}
        assert stats.dropped == {"duplicate": 2, "too_short": 2, "truncated": 2}

    def test_request_cache_replays_without_the_engine(self, tmp_path):
        cfg = AugmentConfig(rounds=2, prompts_per_solution=1)
        with RequestCache(tmp_path / "c.jsonl") as cache:
            first = augment.run(seed_dataset(), cfg, ScriptedEngine(unique_rewrite), cache=cache)
        engine = ScriptedEngine(lambda p, s: pytest.fail("a cached request reached the engine"))
        stats = StageStats()
        with RequestCache(tmp_path / "other-shard.jsonl", read_dir=tmp_path) as cache:
            again = augment.run(seed_dataset(), cfg, engine, cache=cache, stats=stats)
        assert again.to_list() == first.to_list()
        assert stats.cache_hits == stats.requests == 4 and stats.generated_tokens == 0


def metamath_respond(prompt: str, params: SamplingParams) -> str:
    """MetaMath's four prompt kinds, told apart by their query line; answer paths are right or wrong by sample seed."""
    query = prompt.rsplit("Question: ", 1)[1]
    if "Rephrase the above question:" in query:
        return f"How many apples does Tom own ({h(prompt, params.seed)}) in the end?\n\nQuestion: a continuation"
    if "Result:" in query:
        return "Tom now has 7 apples." if "How many now?" in query else "No unknown."
    if "unknown variable" in query:  # backward paths: right only when the masked number was 3 (or MATH's 6)
        return "3 + 4 = 7 so x = 3.\nThe value of x is 3." if "Tom has x" in query else \
            "We get X = 6.\nThe value of X is 6." if "+ X" in query else "So x = 5.\nThe value of x is 5."
    right = params.seed == derive_seed(0, 0)
    if "Tom" in query:
        return f"3 + 4 = {7 if right else 8}.\nThe answer is {7 if right else 8}\n\nQuestion: more"
    return f"So $x = \\boxed{{{2 if right else 3}}}$.\nThe answer is {2 if right else 3}"


class TestMetaMath:
    def test_fobar_masks_each_number_and_appends_the_answer(self):
        stats = StageStats()
        rows = metamath.fobar(SEEDS, AugmentConfig(max_backward_per_seed=2), None, stats=stats)
        assert [r["id"] for r in rows] == ["gsm8k/train/0/fobar/t2", "gsm8k/train/0/fobar/t6",
                                           "math/train/algebra/1/fobar/t3", "math/train/algebra/1/fobar/t5"]
        assert rows[0]["question"] == ("Tom has x apples and buys 4 more. How many now?\nIf we know the answer to the "
                                       "above question is 7, what is the value of unknown variable x?")
        assert rows[1]["question"].startswith("Tom has 3 apples and buys x more.")
        # MATH: X in the question, MetaMath's "### " marker and $X$ in the appended question
        assert rows[2]["question"] == ("Solve $2x + X = 10$ for $x$.\n### If we know the answer to the above question "
                                       "is 2, what is the value of unknown variable $X$?")
        assert rows[3]["question"].startswith("Solve $2x + 6 = X$ for $x$.")
        assert all(r["prompt_id"] == "fobar" and r["parent_id"] == r["seed_id"] for r in rows)
        assert rows[0]["solution"] == SEEDS[0]["solution"]  # no answer paths asked for: the seed's solution

    def test_number_tokens_follow_metamath(self):
        q = "A pen costs $1,200. He has 3.5 pens, x2 and 4th, (3) or 1-2 and 10%."
        assert [q.split(" ")[i] for i in metamath.number_tokens(q)] == ["$1,200.", "3.5", "10%."]
        assert metamath.mask_number(q, 3, "x") == ("A pen costs $x. He has 3.5 pens, x2 and 4th, (3) or 1-2 and 10%.",
                                                   "1200")
        words = "Tom has five apples and half as many pears as 1/2 of Ann."
        assert [words.split(" ")[i] for i in metamath.number_tokens(words)] == ["five", "half", "1/2"]
        assert metamath.mask_number(words, 2, "x") == ("Tom has x apples and half as many pears as 1/2 of Ann.", "5")
        assert metamath.mask_number(words, 5, "x")[0].startswith("Tom has five apples and x% as many")
        assert metamath.mask_number(words, 5, "x")[1] == "50" and metamath.mask_number(words, 10, "x")[1] == "1/2"
        math = "Find five times $3$ plus 4."  # MATH: no number words, $3$ becomes $X$
        assert [math.split(" ")[i] for i in metamath.number_tokens(math, "math")] == ["$3$", "4."]
        assert metamath.mask_number(math, 3, "X", "math") == ("Find five times $X$ plus 4.", "3")

    def test_prompts_are_metamaths_eight_shot_per_dataset(self):
        gsm = prompts.rephrase_prompt("Q?", "gsm8k")
        math = prompts.answer_path_prompt("Q?", "math", "fobar_cot")
        assert gsm.count("\nQuestion: ") + gsm.startswith("Question: ") == 9  # 8 shots + the query
        assert gsm.startswith("You are an AI assistant to help me rephrase questions.")
        assert gsm.endswith("\n\nQuestion: Q?\nRephrase the above question: ")
        assert math.count("Question: ") == 9 and "The value of X is 30." in math
        assert math.endswith("\n\nQuestion: Q?\nA: Let's think step by step.\n")
        assert "Expand $(2z^2 + 5z - 6)" in prompts.answer_path_prompt("Q?", "math")  # MATH seeds get MATH shots
        assert "Angelo and Melanie" in prompts.answer_path_prompt("Q?", "gsm8k")
        sv = prompts.sv_rewrite_prompt("How many now?", "7", "gsm8k")
        assert sv.endswith("\n\nQuestion: How many now? The answer is 7.\n Result: ")

    def test_only_answer_paths_that_reach_the_expected_answer_are_kept(self):
        stats = StageStats()
        engine = ScriptedEngine(metamath_respond)
        cfg = AugmentConfig(methods=["ansaug", "fobar"], n=2, max_backward_per_seed=2)
        out = augment.run(seed_dataset(), cfg, engine, stats=stats).to_list()
        ids = [r["id"] for r in out]
        # AnsAug: sample 0 answers right (7; 2), sample 1 wrong (8; 3). FOBAR: x = 3 (t2) and X = 6 (t3) are right,
        # x = 5 for the masked 4 (t6) and X = 6 for the masked 10 (t5) are not.
        assert ids == ["gsm8k/train/0/ansaug/0", "math/train/algebra/1/ansaug/0", "gsm8k/train/0/fobar/t2",
                       "math/train/algebra/1/fobar/t3"]
        assert stats.dropped == {"wrong_answer": 4}
        assert out[0]["question"] == SEEDS[0]["question"] and out[0]["solution"] == "3 + 4 = 7.\nThe answer is 7"
        assert out[2]["solution"].endswith("The value of x is 3.") and out[2]["model"] == "scripted"
        backward = [p for p in engine.prompts if "unknown variable" in p.rsplit("Question: ", 1)[1]]
        fobar_shot = "Randy has 60 mango trees on his farm. He also has x less than half as many coconut trees"
        assert len(backward) == 4 and all((fobar_shot in p) == ("Tom" in p) for p in backward)  # GSM8K's fobar_cot
        assert all("The value of X is 30." in p for p in backward if "Solve" in p)  # MATH's

    def test_path_answer_reads_metamaths_phrasings(self):
        assert metamath.path_answer("so x = 3.\nThe value of x is 3.", "x") == "3"
        assert metamath.path_answer("The value of $X$ is $\\frac{1}{2}$.", "X") == "\\frac{1}{2}"
        assert metamath.path_answer("The value of unknown variable x is 12.\nDone", "x") == "12"
        assert metamath.path_answer("so $\\boxed{4}$.\nThe answer is 4") == "4"

    def test_rephrase_and_self_verification_through_augment_run(self):
        stats = StageStats()
        cfg = AugmentConfig(methods=["rephrase", "self_verification"], n=2, max_backward_per_seed=1,
                            metamath_answer_paths=False)
        out = augment.run(seed_dataset(), cfg, ScriptedEngine(metamath_respond), stats=stats).to_list()
        ids = [r["id"] for r in out]
        assert ids[:4] == ["gsm8k/train/0/rephrase/0", "gsm8k/train/0/rephrase/1", "math/train/algebra/1/rephrase/0",
                           "math/train/algebra/1/rephrase/1"]
        assert ids[4:] == ["gsm8k/train/0/sv/t2"]  # the MATH statement lost its unknown X: dropped
        assert out[0]["question"].startswith("How many apples") and "continuation" not in out[0]["question"]
        # SV rewrites the asking sentence only, after the rest of the masked question
        assert out[4]["question"] == ("Tom has x apples and buys 4 more. Tom now has 7 apples. What is the value of "
                                      "unknown variable x?")
        assert stats.dropped == {"variable_lost": 1}

    def test_metamath_without_answer_paths_keeps_fobar_template_only(self):
        cfg = AugmentConfig(methods=["fobar"], metamath_answer_paths=False)
        assert len(augment.run(seed_dataset(), cfg, None)) == 4
        with pytest.raises(ValueError, match="needs an engine"):
            augment.run(seed_dataset(), AugmentConfig(methods=["fobar"]), None)


# ---------------------------------------------------------------------------------------------------------------------
# back_translate
# ---------------------------------------------------------------------------------------------------------------------


def augmented_rows(solutions: list[str], question: str | None = None) -> datasets.Dataset:
    rows = [{"id": f"gsm8k/train/0/r1/p1/{i}", "seed_id": "gsm8k/train/0", "source": "gsm8k", "round": 1,
             "prompt_id": "1", "parent_id": "gsm8k/train/0", "solution": s, "model": "m", "revision": None,
             "question": question} for i, s in enumerate(solutions)]
    return datasets.Dataset.from_list(rows, features=schema.AUGMENTED_FEATURES)


class TestBackTranslate:
    @pytest.mark.parametrize("output, expected", [
        ("A farmer has 5 cows and buys 3. How many cows?", "A farmer has 5 cows and buys 3. How many cows?"),
        ("New Problem: A farmer has 5 cows. How many legs?", "A farmer has 5 cows. How many legs?"),
        ("**New Problem:** Ann reads 4 pages a day. Pages in a week?\n\nSolution: 4*7=28",
         "Ann reads 4 pages a day. Pages in a week?"),
        ("What is 12 divided by 4 in total?\nAnswer: 3", "What is 12 divided by 4 in total?"),
    ], ids=str)
    def test_prefix_and_trailing_solution_are_stripped(self, output, expected):
        assert back_translate.clean_question(output) == expected

    def test_prompt_prefill_ids_and_drops(self):
        outputs = {"s0": "Sam has 4 pens and buys 2 more. How many pens?", "s1": "", "s2": "short?",
                   "s3": "Same line\nSame line\nSame line\nSame line", "s4": "x " * 400,
                   "s5": "Sam has 4 pens and buys 2 more. How many pens?"}
        engine = ScriptedEngine(lambda p, s: outputs[re.search(r"Solution: (s\d)", p).group(1)])
        stats = StageStats()
        out = back_translate.run(augmented_rows(list(outputs)), BackTranslateConfig(max_tokens=256), engine,
                                 stats=stats).to_list()
        assert engine.prompts[0] == ("<user>Create a New Problem based on the Solution: s0</user><assistant>"
                                     "New Problem:")  # no trailing space: it belongs to the question's first token
        assert [r["question_id"] for r in out] == ["gsm8k/train/0/r1/p1/0/q0"]
        assert out[0]["augmented_id"] == "gsm8k/train/0/r1/p1/0" and out[0]["augmented_solution"] == "s0"
        assert stats.dropped == {"too_short": 2, "repetitive": 1, "truncated": 1, "duplicate": 1}

    def test_raw_template_for_a_trained_back_translator(self):
        engine = ScriptedEngine(lambda p, s: "New Problem: Ann has 4 cats and 2 dogs. How many pets?")
        out = back_translate.run(augmented_rows(["s0"]), BackTranslateConfig(n=2), engine, template="raw")
        assert engine.prompts[0] == "Create a New Problem based on the Solution: s0\n"
        assert out["question"] == ["Ann has 4 cats and 2 dogs. How many pets?"]  # n=2: the same text is a duplicate

    def test_metamath_questions_pass_through(self):
        engine = ScriptedEngine(lambda p, s: pytest.fail("no request expected"))
        out = back_translate.run(augmented_rows(["s0"], question="What is x if 2x = 8 for real?"),
                                 BackTranslateConfig(), engine).to_list()
        assert out[0]["question_id"] == "gsm8k/train/0/r1/p1/0/q0" and out[0]["model"] == "m"


# ---------------------------------------------------------------------------------------------------------------------
# request cache
# ---------------------------------------------------------------------------------------------------------------------


class TestRequestCache:
    def test_torn_last_record_is_cut_and_appending_continues(self, tmp_path):
        path = tmp_path / "requests.jsonl"
        with RequestCache(path) as cache:
            cache.put_many([("a", Completion("A", "stop", None, 1, 1))])
        with open(path, "a") as f:
            f.write('{"key": "b", "text": "half a rec')  # a kill -9 in the middle of a write
        with RequestCache(path) as cache:
            assert len(cache) == 1 and cache.get("a").text == "A" and cache.get("b") is None
            cache.put_many([("c", Completion("C", "stop", None, 1, 1))])
        lines = path.read_text().splitlines()
        assert [json.loads(line)["key"] for line in lines] == ["a", "c"]

    def test_equal_requests_are_generated_once(self):
        engine = ScriptedEngine(lambda p, s: p.upper())
        reqs = [make_request(engine, p, SamplingParams(seed=1)) for p in ["x", "y", "x"]]
        stats = StageStats()
        out = run_requests(engine, reqs, stats=stats, max_in_flight=1)
        assert [c.text for c in out] == ["X", "Y", "X"] and engine.prompts == ["x", "y"]
        assert stats.requests == 3 and stats.cache_hits == 1

    def test_seeds_depend_on_sample_index_only(self):
        assert derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(0, 2) != derive_seed(1, 2)


# ---------------------------------------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------------------------------------


class TestConfig:
    def test_yaml_then_overrides(self, tmp_path):
        path = tmp_path / "c.yaml"
        path.write_text("augment:\n  rounds: 2\nsolve:\n  n: 4\n  model:\n    model: my/model\n")
        cfg = load_config(path, ["solve.n=5", "augment.prompts=[1, 3]", "verify.consistency=majority"])
        assert (cfg.augment.rounds, cfg.solve.n, cfg.augment.prompts) == (2, 5, ["1", "3"])
        stage = {s.name: s for s in STAGES}
        assert model_for(cfg, stage["solve"]).model == "my/model" and model_for(cfg, stage["verify"]).model == "my/model"
        assert model_for(cfg, stage["augment"]).model == "smollm2"

    @pytest.mark.parametrize("override, message", [
        ("solve.temprature=0.5", "unknown config key(s) ['temprature'] in section 'solve'"),
        ("bogus=1", "unknown config key(s) ['bogus'] at the top level"),
        ("solve.n=three", "solve.n='three': expected an integer"),
        ("solve.format=latex", "solve.format='latex': expected one of ['lce', 'markdown']"),
        ("augment.methods=[mathgenie, evol]", "augment.methods[]='evol'"),
        ("verify.keep_unknown=maybe", "verify.keep_unknown='maybe': expected true or false"),
    ], ids=str)
    def test_bad_keys_and_values_are_named(self, override, message):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(None, [override])

    def test_the_demo_config_ships_inside_the_package(self):
        from mathgenie.demo import DEMO_CONFIG

        assert DEMO_CONFIG.read_text() == (Path(__file__).resolve().parents[1] / "configs" / "demo.yaml").read_text()
        assert load_config(DEMO_CONFIG).decontaminate.eval_sets == ["gsm8k", "math", "math500", "svamp", "simuleq",
                                                                    "mathematics"]


# ---------------------------------------------------------------------------------------------------------------------
# verify: the verdict rule and the consistency filter
# ---------------------------------------------------------------------------------------------------------------------


def T(text):  # noqa: N802
    return schema.block("text", text)


def C(code):  # noqa: N802
    return schema.block("code", code)


def E(out):  # noqa: N802
    return schema.block("execution", out)


class TestVerdict:
    @pytest.mark.parametrize("blocks, answer, rule, expected", [
        ([T("Let's check."), C("print(3*4 == 12)"), E("True"), T("The solution is correct.")], "12", "keywords",
         "correct"),
        ([T("Let's check."), C("print(3*4)"), E("12"), T("The result matches, so the solution is verified.")], "12",
         "keywords", "correct"),
        ([C("x = 5"), E(""), T("This is not correct; the answer should be 6.")], "5", "keywords", "wrong"),
        ([T("It seems there was an error in the solution. I apologize for the oversight.")], "5", "keywords", "wrong"),
        ([T("Checking..."), C("print(2 + 2 == 5)"), E("False")], "5", "keywords", "wrong"),  # no conclusion: execution
        ([T("Checking..."), C("print(2 + 2 == 4)"), E("True")], "4", "keywords", "correct"),
        ([T("The computation has no errors.")], "4", "keywords", "correct"),  # a negated negative is positive
        ([T("Let me compute it."), C("print(7)"), E("7")], "7", "keywords", "unknown"),
        ([T("Now plug the value in."), C("1/0"), E("ZeroDivisionError: division by zero")], "7", "keywords", "unknown"),
        ([T("Recomputing gives \\boxed{0.5}.")], "\\frac{1}{2}", "boxed", "correct"),
        ([T("Recomputing gives \\boxed{3}.")], "4", "boxed", "wrong"),
        ([T("Looks fine to me.")], "4", "boxed", "unknown"),
        ([T("The answer \\boxed{3} is correct.")], "4", "keywords+boxed", "wrong"),  # either rule rejects
        ([T("So the final value is \\boxed{4}.")], "4", "keywords+boxed", "correct"),
        ([T("Hmm.")], None, "keywords+boxed", "unknown"),
    ], ids=lambda v: repr(v)[:50])
    def test_classify_verdict(self, blocks, answer, rule, expected):
        assert verify.classify_verdict(blocks, answer, rule) == expected


def solved_rows(answers_by_question: dict[str, list]) -> datasets.Dataset:
    rows = []
    for qid, answers_ in answers_by_question.items():
        for k, a in enumerate(answers_):
            rows.append({"solution_id": f"{qid}/s{k}", "question_id": qid, "seed_id": qid.split("/r")[0],
                         "source": "gsm8k", "round": 1, "prompt_id": "1", "question": f"question {qid}?",
                         "blocks": [T(f"So the answer is \\boxed{{{a}}}.")] if a is not None else [T("no idea")],
                         "answer": a, "finish_reason": "endofmessage", "num_code_blocks": 0, "model": "m",
                         "revision": None})
    return datasets.Dataset.from_list(rows, features=schema.SOLVED_FEATURES)


class TestConsistency:
    QUESTIONS = {"a/r1/p1/0/q0": ["4", "4.0", "4"], "b/r1/p1/0/q0": ["4", "5", "4"],
                 "c/r1/p1/0/q0": ["1/2", "\\frac{1}{2}", None], "d/r1/p1/0/q0": [None, None, None]}

    @pytest.mark.parametrize("rule, kept, dropped", [
        ("unanimous", ["a/r1/p1/0/q0/s0", "a/r1/p1/0/q0/s1", "a/r1/p1/0/q0/s2"],
         {"inconsistent": 6, "no_answer": 3}),
        ("majority", ["a/r1/p1/0/q0/s0", "a/r1/p1/0/q0/s1", "a/r1/p1/0/q0/s2", "b/r1/p1/0/q0/s0",
                      "b/r1/p1/0/q0/s2", "c/r1/p1/0/q0/s0", "c/r1/p1/0/q0/s1"],
         {"minority": 2, "no_answer": 3}),
        ("none", [f"{q}/s{k}" for q in QUESTIONS for k in range(3)], {}),
    ])
    def test_rules(self, rule, kept, dropped):
        stats = StageStats()
        out = verify.run(solved_rows(self.QUESTIONS), VerifyConfig(consistency=rule, rationale=False), None,
                         stats=stats)
        assert out["solution_id"] == kept
        assert stats.dropped == dropped
        agreement = dict(zip(out["solution_id"], out["agreement"]))
        assert agreement["a/r1/p1/0/q0/s0"] == 1.0
        if rule == "majority":
            assert agreement["b/r1/p1/0/q0/s0"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------------------------------
# solve: the generate -> execute loop, on the real Sandbox
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox():
    from mathgenie.execution import Sandbox

    with Sandbox(timeout=5.0, num_workers=2) as sb:
        yield sb


def lce_steps(steps: dict[str, list[str]]):
    """A scripted LCE model: question -> the blocks it writes, one per request (executions come from the loop)."""

    def respond(prompt, params):
        question = prompt.split("<|user|><|text|>", 1)[1].split("<|endofblock|>", 1)[0]
        done = prompt.split("<|assistant|>", 1)[1].count("<|endofblock|>")
        written = sum(1 for b in schema.parse_blocks(prompt.split("<|assistant|>", 1)[1]) if b["type"] != "execution")
        assert done >= written
        script = steps[question]
        return script[written] if written < len(script) else "<|endofmessage|>"

    return respond


class TestSolveLoop:
    def test_code_runs_in_one_session_per_solution_and_executions_are_appended(self, sandbox):
        engine = ScriptedEngine(lce_steps({"q": [
            "<|text|>Set up.<|endofblock|>", "<|code|>x = 6 * 7<|endofblock|>", "<|code|>print(x + 1)<|endofblock|>",
            "<|text|>The answer is \\boxed{43}.<|endofblock|>"]}))
        stats = StageStats()
        (r0, r1), = code_loop.solve_questions(engine, ["q"], sandbox=sandbox, params=SamplingParams(), n=2, stats=stats)
        assert r0.blocks == [T("Set up."), C("x = 6 * 7"), E(""), C("print(x + 1)"), E("43"),
                             T("The answer is \\boxed{43}.")]
        assert (r0.answer, r0.finish_reason, r0.num_code_blocks) == ("43", "endofmessage", 2)
        assert r1.blocks == r0.blocks
        assert stats.executions == 4 and stats.requests == 10
        # the prompt of a later step is MathCoder's string: system + user turn + the blocks so far, executions included
        assert engine.prompts[-1].startswith(schema.render_prompt("q"))
        assert "<|code|>x = 6 * 7<|endofblock|><|execution|><|endofblock|>" in engine.prompts[-1]

    def test_mathcoder_decimal_rounding_applies_to_model_blocks_and_the_code_it_runs(self, sandbox):
        script = {"q": ["<|text|>Take 0.333333333 and 2.5.<|endofblock|>",
                        "<|code|>x = 1.23456789 * 2\nprint(x, 0.1 + 0.2)<|endofblock|>"]}
        (plain,), = code_loop.solve_questions(ScriptedEngine(lce_steps(script)), ["q"], sandbox=sandbox,
                                          params=SamplingParams())
        (rounded,), = code_loop.solve_questions(ScriptedEngine(lce_steps(script)), ["q"], sandbox=sandbox,
                                            params=SamplingParams(), decimals=6)
        assert plain.blocks[:3] == [T("Take 0.333333333 and 2.5."), C("x = 1.23456789 * 2\nprint(x, 0.1 + 0.2)"),
                                    E("2.46913578 0.30000000000000004")]
        # model-written blocks are rounded before they run; what the code prints is left as printed (as MathCoder)
        assert rounded.blocks[:3] == [T("Take 0.333333 and 2.5."), C("x = 1.234568 * 2\nprint(x, 0.1 + 0.2)"),
                                      E("2.469136 0.30000000000000004")]
        assert code_loop.round_decimals("pi = 3.14159265, 10.5, 7, 0.1234567", 6) == "pi = 3.141593, 10.5, 7, 0.123457"

    def test_block_cap_ends_a_solution_and_its_last_code_still_runs(self, sandbox):
        engine = ScriptedEngine(lce_steps({"loop": ["<|code|>print('tick')<|endofblock|>"] * 40}))
        (r,), = code_loop.solve_questions(engine, ["loop"], sandbox=sandbox, params=SamplingParams(), max_blocks=16)
        assert r.finish_reason == "max_blocks" and r.num_code_blocks == 16 and len(r.blocks) == 32
        assert r.blocks[-1] == E("tick")

    @pytest.mark.parametrize("output, reason", [
        ("<|text|>" + "word " * 50, "length"),  # cut at max_tokens
        ("plain text without blocks<|endofblock|>", "error"),  # not LCE
    ])
    def test_length_and_format_errors_end_a_solution(self, sandbox, output, reason):
        engine = ScriptedEngine(lambda p, s: output)
        (r,), = code_loop.solve_questions(engine, ["q"], sandbox=sandbox, params=SamplingParams(max_tokens=20))
        assert r.finish_reason == reason and r.answer is None

    def test_a_solution_waiting_on_the_sandbox_does_not_block_the_others(self, sandbox):
        others = {f"q{i}": ["<|text|>Go.<|endofblock|>", "<|code|>print(2)<|endofblock|>",
                            "<|text|>\\boxed{2}<|endofblock|>"] for i in range(4)}
        steps = {"slow": ["<|code|>import time\ntime.sleep(2)\nprint(1)<|endofblock|>",
                          "<|text|>\\boxed{1}<|endofblock|>"], **others}
        engine = ScriptedEngine(lce_steps(steps), per_poll=1)  # one request per poll, like a busy engine
        results = code_loop.solve_questions(engine, list(steps), sandbox=sandbox, params=SamplingParams())
        assert [r[0].answer for r in results] == ["1", "2", "2", "2", "2"]
        order = [p.split("<|user|><|text|>")[1].split("<|endofblock|>")[0] for p in engine.prompts]
        after_sleep = [i for i, p in enumerate(engine.prompts) if "<|execution|>1" in p]
        # every other solution ran all its steps (and its code) while the slow one's code was sleeping
        assert order[: after_sleep[0]].count("slow") == 1
        assert all(order[: after_sleep[0]].count(q) == 4 for q in others)

    def test_markdown_fences_become_lce_blocks_and_made_up_output_is_dropped(self, sandbox):
        def respond(prompt, params):
            if "```output" in prompt.split("<assistant>")[-1]:
                return "So Tom has \\boxed{26} pencils."
            return "Compute it.\n```python\nprint(3 * 12 - 10)\n```\n```output\n999\n```\nThe answer is 999."

        engine = ScriptedEngine(respond)
        (r,), = code_loop.solve_questions(engine, ["Tom's pencils?"], sandbox=sandbox, params=SamplingParams(),
                                      format="markdown", few_shot=True)
        assert r.blocks == [T("Compute it."), C("print(3 * 12 - 10)"), E("26"), T("So Tom has \\boxed{26} pencils.")]
        assert r.answer == "26" and r.finish_reason == "endofmessage"
        assert engine.prompts[0].startswith("<system>" + prompts.load("solve")["markdown_system"])
        assert engine.prompts[1].endswith("Compute it.\n```python\nprint(3 * 12 - 10)\n```\n```output\n26\n```\n")

    def test_solve_run_writes_n_rows_per_question_with_lineage(self, sandbox):
        questions = back_translate.run(augmented_rows(["s0"]), BackTranslateConfig(),
                                       ScriptedEngine(lambda p, s: "Ann has 4 cats and 2 dogs. How many pets?"))
        engine = ScriptedEngine(lambda p, s: "<|text|>\\boxed{6}<|endofblock|><|endofmessage|>")
        out = solve.run(questions, SolveConfig(n=3), engine, sandbox=sandbox).to_list()
        assert [r["solution_id"] for r in out] == [f"gsm8k/train/0/r1/p1/0/q0/s{k}" for k in range(3)]
        assert {(r["seed_id"], r["question"], r["answer"], r["model"]) for r in out} == {
            ("gsm8k/train/0", "Ann has 4 cats and 2 dogs. How many pets?", "6", "scripted")}


def test_verify_rationale_uses_table10_and_drops_rejected_solutions(sandbox):
    solved = solved_rows({"a/r1/p1/0/q0": ["4", "4"], "b/r1/p1/0/q0": ["5", "5"], "c/r1/p1/0/q0": ["6", "6"]})

    def verifier(prompt, params):
        if "question a/" in prompt:
            return "<|text|>Recomputing gives \\boxed{4}, so it is correct.<|endofblock|><|endofmessage|>"
        if "question b/" in prompt:
            return "<|text|>This is wrong.<|endofblock|><|endofmessage|>"
        return "<|text|>Hmm.<|endofblock|><|endofmessage|>"

    engine = ScriptedEngine(verifier)
    stats = StageStats()
    out = verify.run(solved, VerifyConfig(), engine, sandbox=sandbox, stats=stats).to_list()
    assert [(r["solution_id"], r["verdict"]) for r in out] == [
        ("a/r1/p1/0/q0/s0", "correct"), ("a/r1/p1/0/q0/s1", "correct"),
        ("c/r1/p1/0/q0/s0", "unknown"), ("c/r1/p1/0/q0/s1", "unknown")]
    assert stats.dropped == {"verdict_wrong": 2}
    assert out[0]["verification"][0]["content"].startswith("Recomputing")
    assert ("<|user|><|text|>**Question**:\nquestion a/r1/p1/0/q0?\n**Solution**:\nSo the answer is \\boxed{4}.\n"
            "Above is a math problem and its solution. Please use code to verify the solution above."
            ) in engine.prompts[0]
    strict = verify.run(solved, VerifyConfig(keep_unknown=False), ScriptedEngine(verifier), sandbox=sandbox)
    assert {r["verdict"] for r in strict} == {"correct"}


def test_echoed_instructions_are_stripped_from_rewrites():
    out = augment.strip_echo("New solution: He buys 4 eggs for $2.\nYou must change the numbers in the Solution to "
                             "create a new solution.", "3")
    assert out == "He buys 4 eggs for $2."


@pytest.mark.parametrize("text, reason", [
    ("A train goes 60 miles in 2 hours.", "not_a_question"),
    ("Find the speed of a train that goes 60 miles in 2 hours.", None),
    ("He bought 3 eggs.\n\nHere's a possible solution:\nHe bought 3 eggs for $1.", "not_a_question"),
])
def test_a_question_must_ask_something(text, reason):
    stats = StageStats()
    engine = ScriptedEngine(lambda p, s: text)
    out = back_translate.run(augmented_rows(["s0"]), BackTranslateConfig(), engine, stats=stats)
    assert (len(out) == 0) == (reason is not None)
    assert stats.dropped == ({reason: 1} if reason else {})


def test_a_prompt_the_engine_refuses_is_dropped_not_fatal():
    class Refusing(ScriptedEngine):
        def submit(self, request_id, prompt, params):
            if "math/train" in prompt or "Subtract" in prompt:
                raise ValueError("prompt longer than max_model_len")
            super().submit(request_id, prompt, params)

    stats = StageStats()
    out = augment.run(seed_dataset(), AugmentConfig(rounds=1), Refusing(unique_rewrite), stats=stats)
    assert out["seed_id"] == ["gsm8k/train/0"] and stats.dropped == {"rejected": 1}


def test_a_question_that_states_its_answer_is_cut_there():
    assert back_translate.clean_question("How many pages are left?\nThe answer is 0.115.") == "How many pages are left?"
