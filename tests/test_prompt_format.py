"""The back-translation prompt format travels with the model: training saves it (``mathgenie_prompt.json`` and the
model card), the back_translate stage reads it from the resolved model and prompts exactly as the model was trained;
a config that says otherwise is an error. A tiny model is trained on CPU and generates through the stage."""

from __future__ import annotations

import json

import pytest
import torch

import datasets
from mathgenie import schema
from mathgenie.generation import prompt_format
from mathgenie.generation.stages import back_translate
from mathgenie.generation.config import BackTranslateConfig
from mathgenie.generation.engine import ModelSpec

QUESTION = "Bo reads {n} pages a day. How many pages does he read in 3 days?"
SOLUTION = "Bo reads {n} pages a day, so in 3 days he reads {n} * 3 = {m} pages. The answer is {m}."


def _seed_rows(count: int) -> list[dict]:
    return [{"id": f"gsm8k/train/{i}", "source": "gsm8k", "question": QUESTION.format(n=i + 2),
             "solution": SOLUTION.format(n=i + 2, m=3 * (i + 2)), "answer": str(3 * (i + 2)), "level": None,
             "type": None} for i in range(count)]


@pytest.fixture(scope="module", params=["plain", "chat"])
def trained(request, smollm2_dir, tmp_path_factory):
    """A tiny random-init Llama (SmolLM2's tokenizer and chat template) SFT-ed on CPU with one prompt format."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from mathgenie.training import BacktranslationConfig, train

    root = tmp_path_factory.mktemp(f"bt-{request.param}")
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                                 tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id)).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    seed = root / "seed.jsonl"
    seed.write_text("".join(json.dumps(r) + "\n" for r in _seed_rows(16)))
    result = train(BacktranslationConfig(
        model_name_or_path=str(root / "base"), dataset_name=str(seed), prompt_format=request.param,
        output_dir=str(root / "run"), max_steps=40, learning_rate=1e-2, warmup_steps=0, lr_scheduler_type="constant",
        logging_steps=10, save_strategy="no", max_length=256, packing=False, per_device_train_batch_size=8,
        global_batch_size=None,
        gradient_accumulation_steps=1, report_to="none", dataloader_num_workers=0, disable_tqdm=True, seed=0,
        use_cpu=True))
    return request.param, result


def _augmented(solutions: list[str]) -> datasets.Dataset:
    return datasets.Dataset.from_list(
        [{"id": f"gsm8k/train/{i}/r1/p1/0", "seed_id": f"gsm8k/train/{i}", "source": "gsm8k", "round": 1,
          "prompt_id": "1", "parent_id": f"gsm8k/train/{i}", "solution": s, "model": "m", "revision": None,
          "question": None} for i, s in enumerate(solutions)], features=schema.AUGMENTED_FEATURES)


@pytest.mark.slow
def test_training_saves_the_format_and_the_stage_generates_with_it(trained):
    trained_format, result = trained
    template = "raw" if trained_format == "plain" else "chat"
    saved = json.loads((result.model_dir / prompt_format.FILE_NAME).read_text())
    assert saved == {"template": template, "instruction": "Create a New Problem based on the Solution: {solution}",
                     "answer_prefix": "New Problem:", "system_prompt": None, "task": "back_translate"}

    from mathgenie.generation.engines import load_engine

    engine = load_engine(ModelSpec(str(result.model_dir), max_model_len=512), "transformers")
    sent = []
    submit = engine.submit
    engine.submit = lambda key, prompt, params: (sent.append(prompt), submit(key, prompt, params))[1]
    try:
        solutions = [SOLUTION.format(n=n, m=3 * n) for n in (4, 7)]  # n=4 was trained on, n=7 was not
        out = back_translate.run(_augmented(solutions), BackTranslateConfig(temperature=0.0, max_tokens=40), engine)
    finally:
        engine.close()
    # the prompt is exactly the start of what the model was trained on (prompt + "New Problem: {q}")
    from transformers import AutoTokenizer

    from mathgenie.training.backtranslation import chat_messages, format_completion, format_plain_prompt

    tok = AutoTokenizer.from_pretrained(result.model_dir)
    trained_text = (format_plain_prompt(solutions[0]) + format_completion("Q?") if template == "raw" else
                    tok.apply_chat_template(chat_messages(solutions[0], "Q?"), tokenize=False))
    prompt_ids = tok(sent[0], add_special_tokens=False)["input_ids"]
    assert tok(trained_text, add_special_tokens=False)["input_ids"][: len(prompt_ids)] == prompt_ids  # token-exact
    # the model learned its format: greedy decoding writes a question of the trained shape for both solutions
    assert len(out) == 2, out.to_list()
    assert all(q.startswith("Bo reads") and "How many pages" in q for q in out["question"]), out["question"]


@pytest.mark.slow
def test_a_config_that_contradicts_the_model_is_an_error(trained):
    trained_format, result = trained
    from mathgenie.generation.engines import load_engine

    engine = load_engine(ModelSpec(str(result.model_dir), max_model_len=512), "transformers")
    other = "chat" if trained_format == "plain" else "raw"
    try:
        with pytest.raises(ValueError, match=f"mathgenie_prompt.json.*model.template='{other}'"):
            back_translate.run(_augmented(["We add 2 and 3 to get 5. The answer is 5."]), BackTranslateConfig(),
                               engine, template=other)
    finally:
        engine.close()


@pytest.mark.slow
def test_the_model_card_carries_the_format(trained):
    _, result = trained
    from mathgenie.training.publish import _prompt_metadata
    from mathgenie.cards import render_model_card

    card = render_model_card(repo_id="u/bt", base_model="base", datasets=[], hyperparameters={},
                             metadata=_prompt_metadata(result.model_dir))
    assert card.data.to_dict()["mathgenie_prompt"] == prompt_format.load(result.model_dir).to_dict()


def test_a_broken_metadata_file_is_an_error_naming_it(tmp_path):
    assert prompt_format.load(tmp_path) is None
    path = tmp_path / prompt_format.FILE_NAME
    path.write_text('{"template": "plain", "instruction": "{solution}", "answer_prefix": ""}')
    with pytest.raises(ValueError, match="template='plain'"):
        prompt_format.load(tmp_path)
    path.write_text('{"template": "raw", "instruction": "{solution}"}')
    with pytest.raises(ValueError, match=f"{path}: .*answer_prefix"):
        prompt_format.load(tmp_path)
    path.write_text('{"template": "raw", "instruction": "{solution}", "answer_prefix": "", "extra": 1}')
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['extra'\]"):
        prompt_format.load(tmp_path)
    (tmp_path / prompt_format.FILE_NAME).write_text('{"template": "raw", "instruction": "x", "answer_prefix": ""}')
    with pytest.raises(ValueError, match="no {solution} field"):
        prompt_format.load(tmp_path)


def test_the_stage_follows_the_saved_format_with_a_scripted_engine(tmp_path):
    """The control flow without training: a folder's mathgenie_prompt.json decides the prompt; ``auto`` follows it."""
    from _scripted import ScriptedEngine

    fmt = prompt_format.PromptFormat(template="raw", instruction="Invent a problem for: {solution}",
                                     answer_prefix="Problem:")
    prompt_format.save(tmp_path, fmt)
    engine = ScriptedEngine(lambda prompt, params: "Problem: How many apples does Tom have now?")
    engine.model_path = str(tmp_path)  # what the real engines set from models.resolve
    out = back_translate.run(_augmented(["Tom has 3 + 4 = 7 apples."]), BackTranslateConfig(), engine)
    assert engine.prompts == ["Invent a problem for: Tom has 3 + 4 = 7 apples.\n"]
    assert out["question"] == ["How many apples does Tom have now?"]  # the model's own prefix stripped
    with pytest.raises(ValueError, match="trained with the 'raw' prompt format"):
        back_translate.run(_augmented(["Tom has 7 apples."]), BackTranslateConfig(), engine, template="chat")
    engine.model_path = str(tmp_path / "elsewhere")  # no metadata: the config's template, auto = chat
    back_translate.run(_augmented(["Tom has 8 apples."]), BackTranslateConfig(), engine)
    assert engine.prompts[-1] == ("<user>Create a New Problem based on the Solution: Tom has 8 apples.</user>"
                                  "<assistant>New Problem:")
