"""The back-translation prompt format travels with the model: training saves it (``mathgenie_prompt.json`` and the
model card), the back_translate stage reads it from the resolved model and prompts exactly as the model was trained;
a config that says otherwise is an error. A tiny model is trained on CPU and generates through the stage."""

from __future__ import annotations

import json

import pytest
import torch

import datasets
from mathgenie import schema
from mathgenie.generation import back_translate, prompt_format
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
        output_dir=str(root / "run"), max_steps=60, learning_rate=5e-3, warmup_steps=0, lr_scheduler_type="constant",
        logging_steps=10, save_strategy="no", max_length=256, per_device_train_batch_size=4, global_batch_size=None,
        gradient_accumulation_steps=1, report_to="none", dataloader_num_workers=0, disable_tqdm=True, seed=0,
        use_cpu=True))
    return request.param, result


def _augmented(solutions: list[str]) -> datasets.Dataset:
    return datasets.Dataset.from_list(
        [{"id": f"gsm8k/train/{i}/r1/p1/0", "seed_id": f"gsm8k/train/{i}", "source": "gsm8k", "round": 1,
          "prompt_id": "1", "parent_id": f"gsm8k/train/{i}", "solution": s, "model": "m", "revision": None,
          "question": None} for i, s in enumerate(solutions)], features=schema.AUGMENTED_FEATURES)


def test_training_saves_the_format_and_the_stage_generates_with_it(trained):
    trained_format, result = trained
    template = "raw" if trained_format == "plain" else "chat"
    saved = json.loads((result.model_dir / prompt_format.FILE_NAME).read_text())
    assert saved == {"template": template, "instruction": "Create a New Problem based on the Solution: {solution}",
                     "answer_prefix": "New Problem:", "system_prompt": None, "task": "back_translate"}

    from mathgenie.generation.models import load_engine

    engine = load_engine(ModelSpec(str(result.model_dir), max_model_len=512), "transformers")
    sent = []
    submit = engine.submit
    engine.submit = lambda key, prompt, params: (sent.append(prompt), submit(key, prompt, params))[1]
    try:
        solutions = [SOLUTION.format(n=n, m=3 * n) for n in (4, 7)]  # n=4 was trained on, n=7 was not
        out = back_translate.run(_augmented(solutions), BackTranslateConfig(temperature=0.0, max_tokens=40), engine)
    finally:
        engine.close()
    if template == "raw":
        assert sent[0] == f"Create a New Problem based on the Solution: {solutions[0]}\n"
    else:
        assert sent[0].startswith("<|im_start|>") and sent[0].endswith("<|im_start|>assistant\nNew Problem: ")
    # the model learned its format: greedy decoding writes a question of the trained shape for both solutions
    assert len(out) == 2, out.to_list()
    assert all(q.startswith("Bo reads") and "How many pages" in q for q in out["question"]), out["question"]


def test_a_config_that_contradicts_the_model_is_an_error(trained):
    trained_format, result = trained
    from mathgenie.generation.models import load_engine

    engine = load_engine(ModelSpec(str(result.model_dir), max_model_len=512), "transformers")
    other = "chat" if trained_format == "plain" else "raw"
    try:
        with pytest.raises(ValueError, match=f"mathgenie_prompt.json.*model.template='{other}'"):
            back_translate.run(_augmented(["We add 2 and 3 to get 5. The answer is 5."]), BackTranslateConfig(),
                               engine, template=other)
    finally:
        engine.close()


def test_the_model_card_carries_the_format(trained):
    _, result = trained
    from mathgenie.training.publish import _prompt_metadata
    from mathgenie.cards import render_model_card

    card = render_model_card(repo_id="u/bt", base_model="base", datasets=[], hyperparameters={},
                             metadata=_prompt_metadata(result.model_dir))
    assert card.data.to_dict()["mathgenie_prompt"] == prompt_format.load(result.model_dir).to_dict()


def test_a_model_without_metadata_gets_the_config_template(tmp_path):
    assert prompt_format.load(tmp_path) is None
    (tmp_path / prompt_format.FILE_NAME).write_text('{"template": "plain", "instruction": "{solution}"}')
    with pytest.raises(ValueError, match="template='plain'"):
        prompt_format.load(tmp_path)
    (tmp_path / prompt_format.FILE_NAME).write_text('{"template": "raw", "instruction": "x", "answer_prefix": ""}')
    with pytest.raises(ValueError, match="no {solution} field"):
        prompt_format.load(tmp_path)
