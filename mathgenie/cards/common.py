"""What dataset and model cards share: citations, the seed sources we know, secret redaction, data-layout metadata."""

from __future__ import annotations

import os
import re
from typing import Any

CITATIONS = {
    "MathGenie": """@article{lu2024mathgenie,
  title   = {MathGenie: Generating Synthetic Data with Question Back-translation for Enhancing Mathematical
             Reasoning of LLMs},
  author  = {Lu, Zimu and Zhou, Aojun and Ren, Houxing and Wang, Ke and Shi, Weikang and Pan, Junting and
             Zhan, Mingjie and Li, Hongsheng},
  journal = {arXiv preprint arXiv:2402.16352},
  year    = {2024}
}""",
    "MathCoder": """@inproceedings{wang2024mathcoder,
  title     = {MathCoder: Seamless Code Integration in {LLM}s for Enhanced Mathematical Reasoning},
  author    = {Wang, Ke and Ren, Houxing and Zhou, Aojun and Lu, Zimu and Luo, Sichun and Shi, Weikang and
               Zhang, Renrui and Song, Linqi and Zhan, Mingjie and Li, Hongsheng},
  booktitle = {The Twelfth International Conference on Learning Representations (ICLR)},
  year      = {2024}
}""",
    "GSM8K": """@article{cobbe2021gsm8k,
  title   = {Training Verifiers to Solve Math Word Problems},
  author  = {Cobbe, Karl and Kosaraju, Vineet and Bavarian, Mohammad and Chen, Mark and Jun, Heewoo and
             Kaiser, Lukasz and Plappert, Matthias and Tworek, Jerry and Hilton, Jacob and Nakano, Reiichiro and
             Hesse, Christopher and Schulman, John},
  journal = {arXiv preprint arXiv:2110.14168},
  year    = {2021}
}""",
    "MATH": """@article{hendrycks2021math,
  title   = {Measuring Mathematical Problem Solving With the MATH Dataset},
  author  = {Hendrycks, Dan and Burns, Collin and Kadavath, Saurav and Arora, Akul and Basart, Steven and
             Tang, Eric and Song, Dawn and Steinhardt, Jacob},
  journal = {NeurIPS Datasets and Benchmarks},
  year    = {2021}
}""",
}

# The seed sets MathGenie starts from. Keys are the ``source`` column values of the seed stage.
KNOWN_SOURCES = {
    "gsm8k": {"name": "GSM8K", "repo_id": "openai/gsm8k", "license": "mit",
              "url": "https://github.com/openai/grade-school-math"},
    "math": {"name": "MATH", "repo_id": "EleutherAI/hendrycks_math", "license": "mit",
             "url": "https://github.com/hendrycks/math"},
}

# The paper's published figures, shown beside ours where a card compares (MathGenie arXiv 2402.16352, §3.1 and Table 3;
# MathGenieData's row count from its Hub dataset viewer: SeedData's 81K solutions + 30K rationales + AugData's 170K).
PAPER_AUGDATA_ROWS = {"gsm8k": 110_000, "math": 60_000}  # AugData: verified (question, solution) pairs per seed set
PAPER_MATHGENIEDATA_ROWS = 284_000  # ≈, SeedData + AugData
PAPER_MODEL = "MathGenieLM-InternLM2-20B"
PAPER_ACCURACY = {"gsm8k": ("GSM8K", 87.7), "math": ("MATH", 55.7)}  # its Table 3 accuracy (%), by benchmark key


def paper_accuracy_note(benchmarks) -> str:
    """The paper's accuracy on the evaluated ``benchmarks`` (keys like ``gsm8k``), one line; "" when none is there."""
    hits = [PAPER_ACCURACY[b] for b in benchmarks if b in PAPER_ACCURACY]
    if not hits:
        return ""
    figures = ", ".join(f"{title} {value}" for title, value in hits)
    return (f"For comparison, the paper reports {PAPER_MODEL} at {figures} (accuracy %, greedy, MathGenie Table 3), "
            "trained on MathGenieData (about 284K rows).")

SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))

_SECRET_KEY_RE = re.compile(r"token|secret|password|passwd|api[_-]?key|authorization|credential", re.IGNORECASE)
_TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MATHGENIE_HUB_TOKEN", "OPENAI_API_KEY")
REDACTED = "<redacted>"


def size_category(n: int) -> str:
    return next((label for limit, label in SIZE_CATEGORIES if n < limit), "n>1B")


def redact(obj: Any) -> Any:
    """A copy of ``obj`` (nested dicts/lists) with values under secret-looking keys replaced by ``<redacted>``."""
    if isinstance(obj, dict):
        return {k: REDACTED if _SECRET_KEY_RE.search(str(k)) and v else redact(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    return obj


def known_secrets() -> list[str]:
    """Tokens this process can see (env vars and huggingface_hub's stored token): none may appear in a card."""
    found = [os.environ.get(var) for var in _TOKEN_ENV]
    try:
        from huggingface_hub import get_token

        found.append(get_token())
    except Exception:  # no token configured, or an unreadable token file: nothing to hide
        pass
    return [s for s in found if s and len(s) >= 8]


def scrub_text(text: str) -> str:
    for secret in known_secrets():
        text = text.replace(secret, REDACTED)
    return text


def data_files_pattern(config: str, split: str) -> str:
    """Where `mathgenie.upload.push_dataset` puts a split's parquet shards (``{config}/{split}-00000-of-00003.parquet``)."""
    return f"{config}/{split}-*.parquet"


def data_metadata(configs: dict) -> tuple[list[dict], list[dict]]:
    """``(configs, dataset_info)`` YAML entries for ``{config_name: DatasetDict}``: the ``data_files`` that let
    ``load_dataset(repo, config)`` work without a script, and each config's features and split sizes."""
    from datasets import DatasetInfo, SplitDict, SplitInfo

    configs_yaml, infos_yaml = [], []
    for name, dsd in configs.items():
        configs_yaml.append({"config_name": name, "data_files": [
            {"split": split, "path": data_files_pattern(name, split)} for split in dsd]})
        splits = SplitDict()
        for split, ds in dsd.items():
            splits.add(SplitInfo(name=split, num_bytes=ds.data.nbytes, num_examples=len(ds)))
        features = next(iter(dsd.values())).features
        info = DatasetInfo(features=features, splits=splits, dataset_size=sum(s.num_bytes for s in splits.values()))
        infos_yaml.append({"config_name": name, **info._to_yaml_dict()})
    return configs_yaml, infos_yaml


def tidy_markdown(text: str) -> str:
    """Collapse runs of blank lines left by template conditionals, except inside fenced code blocks (prompts are
    shown exactly as they are)."""
    out, fence, blank = [], None, False
    for line in text.split("\n"):
        ticks = len(line) - len(line.lstrip("`"))
        if fence is None and ticks >= 3:
            fence = ticks
        elif fence is not None and ticks >= fence and not line.strip("`").strip():
            fence = None
        elif fence is None and not line.strip():
            if blank:
                continue
            blank = True
            out.append(line)
            continue
        blank = False
        out.append(line)
    return "\n".join(out).rstrip("\n") + "\n"


def code_fence(body: str) -> str:
    """A backtick fence longer than any backtick run inside ``body`` (prompts may contain ``` blocks)."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    return "`" * max(3, longest + 1)


def table_cell(value: Any) -> str:
    """A value that cannot break a markdown table row."""
    return str(value).replace("|", "\\|").replace("\n", " ")
