"""Training recipes: exact LCE loss masks, special tokens and chat template, packing without cross-example attention,
config parsing, and CPU training runs of both recipes on a tiny random-init Llama with SmolLM2's tokenizer, with data
and base model pulled from the local Hub and the result pushed back and reloaded at its tag."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import yaml

import datasets
from mathgenie import schema
from mathgenie.training.backtranslation import chat_messages, encode_pairs, format_plain_prompt
from mathgenie.training.lce import add_lce_tokens, encode_conversations

CONVERSATION = schema.to_messages(
    {
        "question": "Tom has 3 apples and buys 4 more. How many?",
        "blocks": [
            schema.block("text", "Add the apples."),
            schema.block("code", "x = 3 + 4\nprint(x)"),
            schema.block("execution", "7"),
            schema.block("text", "Check with a product."),
            schema.block("code", "print(7 * 1)"),
            schema.block("execution", "7\n"),
            schema.block("text", "The answer is \\boxed{7}."),
        ],
    },
    system=schema.BOXED_SYSTEM,
)


@pytest.fixture(scope="module")
def base_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def lce_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    add_lce_tokens(tok)
    return tok


def tiny_llama(vocab_size: int, tokenizer=None, seed: int = 0):
    """A random-init Llama: hidden 64, 2 layers, 4 heads (tied embeddings, like SmolLM2)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    ids = {} if tokenizer is None else {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                                        "pad_token_id": tokenizer.pad_token_id}
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         tie_word_embeddings=True, **ids)
    return LlamaForCausalLM(config)


def runs(ids: list[int], mask: list[int], tokenizer) -> list[tuple[int, str]]:
    """Maximal runs of equal mask values, decoded."""
    out, pos = [], 0
    for value, group in itertools.groupby(mask):
        n = len(list(group))
        out.append((value, tokenizer.decode(ids[pos : pos + n])))
        pos += n
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Special tokens, chat template, masks
# ---------------------------------------------------------------------------------------------------------------------


def test_lce_tokens_chat_template_round_trip(smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    base_len = len(tok)
    model = tiny_llama(base_len, tok)
    old_rows = model.get_input_embeddings().weight[:base_len].detach().clone()
    new_ids = add_lce_tokens(tok, model)

    assert len(new_ids) == 8 and len(tok) == base_len + 8
    for token in schema.SPECIAL_TOKENS:  # each one atomic id, skipped as special when decoding
        assert len(tok(token, add_special_tokens=False)["input_ids"]) == 1
    assert set(schema.SPECIAL_TOKENS) <= set(tok.all_special_tokens)
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == len(tok)
    assert torch.equal(emb[:base_len], old_rows)
    assert torch.allclose(emb[new_ids], old_rows.mean(0, keepdim=True).expand(8, -1))
    assert tok.convert_tokens_to_ids(schema.END_OF_MESSAGE) in model.generation_config.eos_token_id
    assert add_lce_tokens(tok, model) == [] and len(tok) == base_len + 8  # idempotent

    rendered = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert rendered == schema.render_conversation(CONVERSATION)
    ids = tok(rendered, add_special_tokens=False)["input_ids"]
    assert schema.parse_conversation(tok.decode(ids)) == CONVERSATION
    prompt = tok.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == schema.render_prompt(CONVERSATION[1]["content"][0]["content"], system=schema.BOXED_SYSTEM)


def test_lce_masks_are_exact(lce_tokenizer):
    out = encode_conversations([CONVERSATION], lce_tokenizer)
    ids, mask = out["input_ids"][0], out["assistant_masks"][0]
    assert ids == lce_tokenizer(schema.render_conversation(CONVERSATION), add_special_tokens=False)["input_ids"]
    assert runs(ids, mask, lce_tokenizer) == [
        (0, f"<|system|><|text|>{schema.BOXED_SYSTEM}<|endofblock|><|endofmessage|>"
            "<|user|><|text|>Tom has 3 apples and buys 4 more. How many?<|endofblock|><|endofmessage|><|assistant|>"),
        (1, "<|text|>Add the apples.<|endofblock|><|code|>x = 3 + 4\nprint(x)<|endofblock|>"),
        (0, "<|execution|>7<|endofblock|>"),
        (1, "<|text|>Check with a product.<|endofblock|><|code|>print(7 * 1)<|endofblock|>"),
        (0, "<|execution|>7\n<|endofblock|>"),
        (1, "<|text|>The answer is \\boxed{7}.<|endofblock|><|endofmessage|>"),
    ]


def test_lce_masks_with_empty_system_and_bos_prefix(lce_tokenizer):
    """An empty block contributes no content token; a tokenizer that prepends BOS gets it, masked."""
    conversation = schema.to_messages({"question": "1+1?", "blocks": [schema.block("text", "2")]})
    tok = lce_tokenizer
    out = encode_conversations([conversation], tok)
    assert runs(out["input_ids"][0], out["assistant_masks"][0], tok) == [
        (0, "<|system|><|text|><|endofblock|><|endofmessage|><|user|><|text|>1+1?<|endofblock|><|endofmessage|>"
            "<|assistant|>"),
        (1, "<|text|>2<|endofblock|><|endofmessage|>"),
    ]
    from tokenizers.processors import TemplateProcessing

    bos_tok = tok.__class__.from_pretrained(tok.name_or_path)
    add_lce_tokens(bos_tok)
    bos_tok._tokenizer.post_processor = TemplateProcessing(
        single=f"{bos_tok.bos_token} $A", special_tokens=[(bos_tok.bos_token, bos_tok.bos_token_id)])
    out = encode_conversations([conversation], bos_tok)
    assert out["input_ids"][0][0] == bos_tok.bos_token_id and out["assistant_masks"][0][0] == 0
    assert out["input_ids"][0][1:] == encode_conversations([conversation], tok)["input_ids"][0]


def test_lce_rejects_special_token_inside_a_block(lce_tokenizer):
    bad = schema.to_messages({"question": "q", "blocks": [{"type": "text", "content": "a <|endofblock|> b"}]})
    with pytest.raises(schema.LCEFormatError, match="row 'q-7'"):
        encode_conversations([bad], lce_tokenizer, row_ids=["q-7"])
    with pytest.raises(ValueError, match="add_lce_tokens"):
        from transformers import AutoTokenizer

        encode_conversations([CONVERSATION], AutoTokenizer.from_pretrained(lce_tokenizer.name_or_path))


@pytest.mark.parametrize("prompt_format", ["plain", "chat"])
def test_backtranslation_masks(base_tokenizer, prompt_format):
    tok = base_tokenizer
    out = encode_pairs(["We add 3 and 4 to get 7."], ["What is 3 + 4?"], tok, prompt_format=prompt_format)
    got = runs(out["input_ids"][0], out["completion_mask"][0], tok)
    if prompt_format == "plain":
        assert got == [(0, format_plain_prompt("We add 3 and 4 to get 7.")),
                       (1, "New Problem: What is 3 + 4?" + tok.eos_token)]
        assert format_plain_prompt("s") == "Create a New Problem based on the Solution: s\n"
    else:
        prompt = tok.apply_chat_template(chat_messages("We add 3 and 4 to get 7."), tokenize=False,
                                         add_generation_prompt=True)
        full = tok.apply_chat_template(chat_messages("We add 3 and 4 to get 7.", "What is 3 + 4?"), tokenize=False)
        assert got == [(0, prompt), (1, full[len(prompt):])]
        assert got[1][1].startswith("New Problem: What is 3 + 4?<|im_end|>")


# ---------------------------------------------------------------------------------------------------------------------
# Packing: no attention across examples
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["rows", "flattened"])
def test_packing_does_not_attend_across_examples(layout):
    """Log-probs of packed examples equal those of each example alone: `PackedRowsCollator` rows (SDPA path) and
    TRL's padding-free flattening (varlen path, here also run on SDPA)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from mathgenie.training.packing import PackedRowsCollator

    model = tiny_llama(100).eval()
    model.config._attn_implementation = "sdpa"
    a, b, c = list(range(1, 13)), list(range(20, 27)), list(range(40, 50))
    rows = [{"input_ids": a + b, "labels": a + b, "seq_lengths": [12, 7]},
            {"input_ids": c, "labels": c, "seq_lengths": [10]}]
    if layout == "rows":
        batch = PackedRowsCollator(pad_token_id=0)(rows)
        assert "attention_mask" not in batch and batch["input_ids"].shape == (2, 19)
        spans = [(0, 0, a), (0, 12, b), (1, 0, c)]
    else:
        batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
        spans = [(0, 0, a), (0, 12, b), (0, 19, c)]
    assert (batch["labels"][batch["position_ids"] == 0] == -100).all()  # no example predicts the next one's start
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        packed = model(**inputs, use_cache=False).logits  # the block-diagonal mask applies without a KV cache
        naive = model(input_ids=batch["input_ids"], use_cache=False).logits  # plain concatenation
    for row, start, ids in spans:
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
        torch.testing.assert_close(packed[row, start : start + len(ids)], alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(naive[0, 12:19], packed[0, 12:19], atol=1e-3)  # the test can tell the difference


# ---------------------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------------------


def test_yaml_config_with_cli_overrides(tmp_path):
    from mathgenie.training.cli import parse_config
    from mathgenie.training.config import MathGenieLMConfig

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"recipe": "mathgenie-lm", "model_name_or_path": "org/base",
                                    "dataset_name": "org/verified", "per_device_train_batch_size": 4,
                                    "learning_rate": 1e-5, "exclude_verdicts": ["wrong", "unknown"]}))
    config = parse_config(str(path), ["--learning_rate", "3e-5", "--push_repo_id", "org/m", "--push_tag", "v1"])
    assert isinstance(config, MathGenieLMConfig)
    assert (config.learning_rate, config.push_tag, config.exclude_verdicts) == (3e-5, "v1", ["wrong", "unknown"])
    # paper defaults; global batch 64 = 4 per device x 16 accumulation steps on one process
    assert (config.lr_scheduler_type.value, config.warmup_steps, config.max_length, config.num_train_epochs) == (
        "cosine", 50, 4096, 3.0)
    assert config.gradient_accumulation_steps == 16

    path.write_text(yaml.safe_dump({"model_name_or_path": "m", "dataset_name": "d"}))
    with pytest.raises(ValueError, match="recipe"):
        parse_config(str(path))
    path.write_text(yaml.safe_dump({"recipe": "backtranslation", "model_name_or_path": "m", "dataset_name": "d",
                                    "seed_dataset_name": "x"}))
    with pytest.raises(ValueError, match="seed_dataset_name"):  # a mathgenie-lm field is unknown to backtranslation
        parse_config(str(path))
    path.write_text(yaml.safe_dump({"recipe": "backtranslation", "dataset_name": "d"}))
    with pytest.raises(ValueError, match="model_name_or_path"):
        parse_config(str(path))


def test_shipped_configs_parse():
    from mathgenie.training.cli import parse_config

    root = Path(__file__).resolve().parents[1] / "configs"
    bt = parse_config(str(root / "train_backtranslation.yaml"))
    lm = parse_config(str(root / "train_mathgenie_lm.yaml"))
    assert bt.recipe == "backtranslation" and lm.recipe == "mathgenie-lm"
    assert (lm.learning_rate, lm.warmup_steps, lm.max_length, lm.packing) == (2e-5, 50, 4096, True)
    for name in ("fsdp.yaml", "deepspeed_zero3.yaml", "ddp.yaml"):
        assert yaml.safe_load((root / "accelerate" / name).read_text())["distributed_type"]


def test_a_local_dataset_takes_the_shipped_main_revision_but_no_other(tmp_path):
    from mathgenie.training.data import load_source

    path = tmp_path / "seed.jsonl"
    path.write_text('{"question": "q", "solution": "s"}\n')
    ds, source = load_source(str(path), revision="main")  # what the shipped YAMLs say
    assert ds["question"] == ["q"] and source.revision is None
    with pytest.raises(ValueError, match="only applies to Hub repos"):
        load_source(str(path), revision="v1.0")


# ---------------------------------------------------------------------------------------------------------------------
# CPU training on the local Hub
# ---------------------------------------------------------------------------------------------------------------------


def _verified_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        a, b = 2 + i % 7, 3 + i % 5
        rows.append({
            "solution_id": f"q{i}/s0", "question_id": f"q{i}", "seed_id": f"gsm8k/train/{i}", "source": "gsm8k",
            "round": 1, "prompt_id": "1", "question": f"Ann has {a} pens and gets {b} more. How many pens?",
            "blocks": [schema.block("text", "Add them."), schema.block("code", f"print({a} + {b})"),
                       schema.block("execution", str(a + b)),
                       schema.block("text", f"The answer is \\boxed{{{a + b}}}.")],
            "answer": str(a + b), "finish_reason": "endofmessage", "num_code_blocks": 1, "model": "m", "revision": "r",
            "agreement": 1.0, "verification": [schema.block("text", "ok")], "verdict": "correct",
            "verifier_model": "m", "verifier_revision": "r",
        })
    rows[0]["verdict"] = "wrong"
    rows[1]["finish_reason"] = "length"
    return rows


@pytest.fixture(scope="module")
def hub_data(hub, smollm2_dir, tmp_path_factory):
    """Pushed once: a tiny random-init Llama base model (tag v0), a verified-like dataset, a MathCoder-style seed LCE
    dataset (``messages``) and a seed with question/solution."""
    from huggingface_hub import HfApi
    from transformers import AutoTokenizer

    from mathgenie.upload import push_dataset, push_model

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    base_dir = tmp_path_factory.mktemp("tiny-base")
    tiny_llama(len(tok), tok).save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    base = push_model(base_dir, "test-user/tiny-llama-smollm2-tok", tag="v0")

    verified = datasets.Dataset.from_list(_verified_rows(24), features=schema.VERIFIED_FEATURES)
    v = push_dataset({"default": datasets.DatasetDict({"train": verified})}, "test-user/train-verified", tag="v1")
    seed_lce = datasets.Dataset.from_list([
        {"messages": [{"role": "system", "content": [schema.block("text", "")]},
                      {"role": "user", "content": [schema.block("text", f"What is {i} times 2?")]},
                      {"role": "assistant", "content": [schema.block("code", f"print({i} * 2)"),
                                                        schema.block("execution", str(2 * i)),
                                                        schema.block("text", f"The answer is {2 * i}.")]}]}
        for i in range(8)])
    s = push_dataset({"default": datasets.DatasetDict({"train": seed_lce})}, "test-user/train-seed-lce", tag="v1")
    seed = datasets.Dataset.from_list([
        {"id": f"gsm8k/train/{i}", "source": "gsm8k", "question": f"Bo reads {i + 2} pages a day. How many in 3 days?",
         "solution": f"{i + 2} * 3 = {3 * (i + 2)}. The answer is {3 * (i + 2)}.", "answer": str(3 * (i + 2)),
         "level": None, "type": None} for i in range(16)], features=schema.SEED_FEATURES)
    sd = push_dataset({"default": datasets.DatasetDict({"train": seed})}, "test-user/train-seed", tag="v1")
    api = HfApi()
    return {"base": base.repo_id, "base_sha": base.commit_sha, "verified": v.repo_id, "verified_sha": v.commit_sha,
            "seed_lce": s.repo_id, "seed": sd.repo_id, "seed_sha": sd.commit_sha, "api": api}


def _cpu_args(tmp: Path, **kw) -> dict:
    return {"output_dir": str(tmp), "learning_rate": 3e-3, "warmup_steps": 0, "lr_scheduler_type": "constant",
            "logging_steps": 1, "save_strategy": "steps", "save_steps": 10, "max_length": 256,
            "per_device_train_batch_size": 2, "global_batch_size": None, "gradient_accumulation_steps": 1,
            "gradient_checkpointing": False, "report_to": "none", "dataloader_num_workers": 0,
            "disable_tqdm": True, "seed": 0, **kw}


def _losses(checkpoint: Path) -> list[float]:
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


@pytest.mark.slow
def test_mathgenie_lm_trains_pushes_and_resumes(hub, hub_data, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mathgenie.training import MathGenieLMConfig, train

    config = MathGenieLMConfig(
        model_name_or_path=hub_data["base"], model_revision="v0", dataset_name=hub_data["verified"],
        dataset_revision="v1", seed_dataset_name=hub_data["seed_lce"], seed_dataset_revision="v1",
        push_repo_id="test-user/mathgenie-lm-tiny", push_tag="v1", max_steps=20, **_cpu_args(tmp_path / "run"))
    result = train(config)

    losses = _losses(tmp_path / "run" / "checkpoint-20")
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 1.0, (first, last)
    assert result.global_step == 20
    assert result.base_model.revision == hub_data["base_sha"]
    assert [(s.name, s.revision, s.num_rows) for s in result.sources] == [
        (hub_data["verified"], hub_data["verified_sha"], 24), (hub_data["seed_lce"], result.sources[1].revision, 8)]
    summary = result.train_summary
    assert summary["num_sequences"] == 22 + 8  # 2 verified rows dropped: verdict wrong, cut by length
    assert summary["num_tokens"] == summary["epoch"] * summary["sequence_tokens"]  # whole epochs, pads not counted
    assert json.loads((result.model_dir / "mathgenie_training.json").read_text())["hyperparameters"]["packing"]

    # pushed with a card and a tag; the tag loads the trained weights, tokens and template
    assert result.push.tag == "v1"
    remote = AutoModelForCausalLM.from_pretrained(config.push_repo_id, revision="v1")
    local = AutoModelForCausalLM.from_pretrained(result.model_dir)
    for (name, p), (_, q) in zip(local.state_dict().items(), remote.state_dict().items()):
        assert torch.equal(p, q), name
    tok = AutoTokenizer.from_pretrained(config.push_repo_id, revision="v1")
    assert tok.chat_template == schema.CHAT_TEMPLATE and remote.get_input_embeddings().num_embeddings == len(tok)
    assert all(len(tok(t, add_special_tokens=False)["input_ids"]) == 1 for t in schema.SPECIAL_TOKENS)
    card = (Path(hub_data["api"].hf_hub_download(config.push_repo_id, "README.md", revision="v1"))).read_text()
    assert hub_data["base"] in card and hub_data["verified_sha"] in card and "learning_rate" in card
    assert "last_loss" in card
    assert f"data: {hub_data['verified']} (solutions, weight 1.0) -> 22 samples" in card  # the mix, with its counts

    # resume from checkpoint-10: continues at step 11 and reproduces the first run's losses
    resumed = train(MathGenieLMConfig(
        model_name_or_path=hub_data["base"], model_revision="v0", dataset_name=hub_data["verified"],
        dataset_revision="v1", seed_dataset_name=hub_data["seed_lce"], seed_dataset_revision="v1", max_steps=20,
        resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-10"), **_cpu_args(tmp_path / "resumed")))
    assert resumed.global_step == 20
    before = {h["step"]: h["loss"] for h in json.loads(
        (tmp_path / "run" / "checkpoint-20" / "trainer_state.json").read_text())["log_history"] if "loss" in h}
    after = {h["step"]: h["loss"] for h in json.loads(
        (tmp_path / "resumed" / "checkpoint-20" / "trainer_state.json").read_text())["log_history"] if "loss" in h}
    assert sorted(after) == list(range(1, 21))
    for step in range(11, 21):
        assert after[step] == pytest.approx(before[step], rel=1e-3), step


@pytest.mark.slow
def test_backtranslation_trains_through_the_cli(hub, hub_data, tmp_path):
    from mathgenie.cli import main

    cfg = {"recipe": "backtranslation", "model_name_or_path": hub_data["base"], "model_revision": "v0",
           "dataset_name": hub_data["seed"], "dataset_revision": "v1", "max_steps": 16, "prompt_format": "plain",
           **_cpu_args(tmp_path / "bt")}
    path = tmp_path / "bt.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--learning_rate", "4e-3"]) == 0
    losses = _losses(tmp_path / "bt" / "checkpoint-16")
    assert losses[-1] < losses[0] - 1.0, losses
    info = json.loads((tmp_path / "bt" / "model" / "mathgenie_training.json").read_text())
    assert info["datasets"][0]["revision"] == hub_data["seed_sha"]
    assert info["hyperparameters"]["learning_rate"] == 4e-3 and info["hyperparameters"]["prompt_format"] == "plain"
