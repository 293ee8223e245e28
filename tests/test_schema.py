"""The LCE format (render ↔ parse, chat template) and the per-stage row schemas of `mathgenie.schema`."""

from __future__ import annotations

import jinja2
import pyarrow.parquet as pq
import pytest

import datasets
from mathgenie import schema
from mathgenie.schema import (
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    STAGE_FEATURES,
    LCEFormatError,
    block,
    blocks_to_plain_text,
    empty_dataset,
    parse_blocks,
    parse_conversation,
    render_blocks,
    render_conversation,
    render_prompt,
    to_messages,
)

# Contents that break naive formats: braces (Jinja/str.format), newlines, indentation, unicode, "<|" without a token,
# an empty block, trailing whitespace.
TRICKY_BLOCKS = [
    block("text", "Let $f(x) = \\frac{x^2}{2}$ and {x} be a set; café ∑ 🚀"),
    block("code", "from sympy import *\nd = {'a': {1, 2}}\n\ndef f(x):\n    return f\"{x!r:>{10}}\"\nprint(d)\n"),
    block("execution", "{'a': {1, 2}}\n  \n"),
    block("text", ""),
    block("text", "a <| b |> c, 1 < 2 and 3 > |2|"),
    block("code", "print('\\t\\n{{}}')"),
]

CONVERSATION = [
    {"role": "system", "content": [block("text", schema.BOXED_SYSTEM)]},
    {"role": "user", "content": [block("text", "What is $\\{1,2\\} \\cup \\{3\\}$?\nAnswer in braces {}.")]},
    {"role": "assistant", "content": TRICKY_BLOCKS},
]


def test_render_blocks_is_exact_concatenation_of_tokens():
    text = render_blocks([block("text", "Hi"), block("code", "x = 1"), block("execution", "1")])
    assert text == "<|text|>Hi<|endofblock|><|code|>x = 1<|endofblock|><|execution|>1<|endofblock|>"


def test_blocks_round_trip_losslessly():
    assert parse_blocks(render_blocks(TRICKY_BLOCKS)) == TRICKY_BLOCKS
    assert parse_blocks("") == []


def test_conversation_round_trips_losslessly():
    text = render_conversation(CONVERSATION)
    assert parse_conversation(text) == CONVERSATION
    assert render_conversation(parse_conversation(text)) == text


def test_string_content_is_one_text_block():
    messages = [{"role": "user", "content": "2 + {3}?"}]
    assert render_conversation(messages) == "<|user|><|text|>2 + {3}?<|endofblock|><|endofmessage|>"
    expected = [{"role": "user", "content": [block("text", "2 + {3}?")]}]
    assert parse_conversation(render_conversation(messages)) == expected


def test_render_prompt_ends_with_generation_prompt_and_parses_back():
    prompt = render_prompt("What is 1+1?", system=schema.BOXED_SYSTEM)
    assert prompt.endswith("<|endofmessage|><|assistant|>")
    assert parse_conversation(prompt) == [
        {"role": "system", "content": [block("text", schema.BOXED_SYSTEM)]},
        {"role": "user", "content": [block("text", "What is 1+1?")]},
        {"role": "assistant", "content": []},
    ]


def test_partial_blocks_of_a_cut_generation():
    cut = "<|text|>First<|endofblock|><|code|>x = {1:"
    with pytest.raises(LCEFormatError, match="offset 27"):
        parse_blocks(cut)
    assert parse_blocks(cut, allow_partial=True) == [block("text", "First"), block("code", "x = {1:")]
    # An unfinished assistant message (no <|endofmessage|>) is returned with its partial blocks.
    text = render_prompt("q") + cut
    assert parse_conversation(text)[-1] == {"role": "assistant", "content": parse_blocks(cut, allow_partial=True)}


@pytest.mark.parametrize(
    "text, where",
    [
        ("stray<|text|>a<|endofblock|>", "offset 0"),  # text outside a block
        ("<|text|>a<|endofblock|>\n", "offset 23"),  # trailing text after the last block
        ("<|text|>a<|code|>b<|endofblock|>", "special token inside a block"),
        ("<|text|>never closed", "offset 0"),
        ("<|image|>x<|endofblock|>", "offset 0"),  # unknown block token
    ],
)
def test_parse_blocks_rejects_invalid_lce(text, where):
    with pytest.raises(LCEFormatError, match=where):
        parse_blocks(text)


def test_parse_conversation_rejects_text_outside_messages():
    with pytest.raises(LCEFormatError, match="expected a role token at offset 0"):
        parse_conversation("hello<|user|><|text|>a<|endofblock|><|endofmessage|>")
    with pytest.raises(LCEFormatError, match="not an LCE block"):
        parse_conversation("<|user|>plain text<|endofmessage|>")


def test_render_rejects_unknown_roles_and_block_types():
    with pytest.raises(LCEFormatError, match="unknown role 'tool'"):
        render_conversation([{"role": "tool", "content": "x"}])
    with pytest.raises(LCEFormatError, match="unknown block type 'image'"):
        render_blocks([{"type": "image", "content": "x"}])
    with pytest.raises(LCEFormatError, match="unknown block type"):
        block("markdown", "x")


def test_render_blocks_rejects_content_with_special_tokens():
    # Rendering must not produce text that parse_blocks cannot read back.
    with pytest.raises(LCEFormatError):
        render_blocks([block("text", "a<|endofblock|>b")])


def test_partial_block_does_not_swallow_special_tokens():
    # A model that opens a code block without closing its text block: the partial text block must not silently
    # contain "<|code|>".
    with pytest.raises(LCEFormatError):
        parse_blocks("<|text|>abc<|code|>print(1)", allow_partial=True)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<|text|>a<|endofblock|><|co", [{"type": "text", "content": "a"}]),
        ("<|text|>abc<|endofbl", [{"type": "text", "content": "abc"}]),
        ("<|code|>x = 1 <| 2", [{"type": "code", "content": "x = 1 <| 2"}]),
    ],
)
def test_partial_generation_cut_inside_a_special_token(text, expected):
    assert parse_blocks(text, allow_partial=True) == expected


# ---------------------------------------------------------------------------------------------------------------------
# CHAT_TEMPLATE == render_conversation
# ---------------------------------------------------------------------------------------------------------------------

TEMPLATE_CASES = [
    (CONVERSATION, False),
    ([{"role": "system", "content": ""}, {"role": "user", "content": "What is {x}?\n  ok é"}], True),
    ([{"role": "user", "content": [block("text", "{{ not jinja }} {% raw %}")]}], False),
]


@pytest.mark.parametrize("messages, add_generation_prompt", TEMPLATE_CASES)
def test_chat_template_with_jinja2_equals_render_conversation(messages, add_generation_prompt):
    rendered = jinja2.Environment().from_string(CHAT_TEMPLATE).render(
        messages=messages, add_generation_prompt=add_generation_prompt
    )
    assert rendered == render_conversation(messages, add_generation_prompt=add_generation_prompt)


@pytest.fixture(scope="module")
def lce_tokenizer():
    """A real transformers tokenizer (tiny word-level vocab) carrying the LCE special tokens and chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", additional_special_tokens=SPECIAL_TOKENS
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@pytest.mark.parametrize("messages, add_generation_prompt", TEMPLATE_CASES)
def test_tokenizer_apply_chat_template_equals_render_conversation(lce_tokenizer, messages, add_generation_prompt):
    rendered = lce_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert rendered == render_conversation(messages, add_generation_prompt=add_generation_prompt)
    # Each LCE token is one token id, so the model sees block boundaries as single tokens.
    ids = lce_tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert ids.count(lce_tokenizer.convert_tokens_to_ids("<|endofmessage|>")) == len(messages)


# ---------------------------------------------------------------------------------------------------------------------
# Row schemas
# ---------------------------------------------------------------------------------------------------------------------


def _example_row(features: datasets.Features) -> dict:
    values = {"string": "x{1}\né", "int32": 3, "float32": 0.5}
    row = {}
    for name, feature in features.items():
        row[name] = [block("code", "print({})"), block("execution", "{}")] if name in ("blocks", "verification") else (
            values[feature.dtype]
        )
    return row


@pytest.mark.parametrize("stage", list(STAGE_FEATURES))
def test_stage_features_are_valid_and_round_trip_through_parquet(stage, tmp_path):
    features = STAGE_FEATURES[stage]
    assert datasets.Features.from_arrow_schema(features.arrow_schema) == features
    empty = empty_dataset(stage)
    assert empty.num_rows == 0 and empty.features == features
    row = _example_row(features)
    ds = datasets.Dataset.from_list([row], features=features)
    ds.to_parquet(tmp_path / "shard.parquet")
    assert pq.read_schema(tmp_path / "shard.parquet").names == list(features)
    back = datasets.Dataset.from_parquet(str(tmp_path / "shard.parquet"), features=features)
    assert back[0] == row


def test_stages_carry_lineage_through():
    lineage = {"seed_id", "source", "round", "prompt_id"}
    for stage in ("augmented", "back_translated", "solved", "verified"):
        assert lineage <= set(STAGE_FEATURES[stage]), stage
    assert set(STAGE_FEATURES["solved"]) <= set(STAGE_FEATURES["verified"])
    assert list(STAGE_FEATURES["seed"]) == ["id", "source", "question", "solution", "answer", "level", "type"]


def test_to_messages_renders_a_training_conversation():
    row = _example_row(STAGE_FEATURES["solved"])
    messages = to_messages(row, system=schema.BOXED_SYSTEM)
    text = render_conversation(messages)
    assert parse_conversation(text) == messages
    assert text.startswith("<|system|><|text|>" + schema.BOXED_SYSTEM)


def test_blocks_to_plain_text_fences_code_and_output():
    text = blocks_to_plain_text(
        [block("text", " Compute. "), block("code", "print(2+2)\n"), block("execution", "4\n"), block("text", "")]
    )
    assert text == "Compute.\n```python\nprint(2+2)\n```\n```output\n4\n```"
