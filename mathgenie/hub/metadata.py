"""Checks of a README's YAML metadata, as the Hub's ``/api/validate-yaml`` and its commit endpoint do.

``validate_readme(content, repo_type) -> (errors, warnings)``: each a list of messages naming the field, the value and
what is allowed. The server answers 400 when there are errors (so ``RepoCard.validate()`` raises and a commit with
such a README is refused).
"""

from __future__ import annotations

import re

import yaml

# The Hub's license ids (https://huggingface.co/docs/hub/repositories-licenses).
LICENSES = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5
cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0
cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl
lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openrail++
osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license llama2 llama3 llama3.1 llama3.2
llama3.3 llama4 gemma unknown other
""".split())

SIZE_CATEGORIES = ("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
                   "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T")

TASKS = frozenset("""
text-classification token-classification table-question-answering question-answering zero-shot-classification
translation summarization feature-extraction text-generation text2text-generation fill-mask sentence-similarity
text-to-speech text-to-audio automatic-speech-recognition audio-to-audio audio-classification voice-activity-detection
depth-estimation image-classification object-detection image-segmentation text-to-image image-to-text image-to-image
image-to-video unconditional-image-generation video-classification reinforcement-learning robotics
tabular-classification tabular-regression tabular-to-text table-to-text multiple-choice text-ranking text-retrieval
time-series-forecasting text-to-video image-text-to-text visual-question-answering document-question-answering
zero-shot-image-classification graph-ml mask-generation zero-shot-object-detection text-to-3d image-to-3d
image-feature-extraction video-text-to-text keypoint-detection visual-document-retrieval any-to-any other
""".split())

_LANGUAGE_RE = re.compile(r"^(?:[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*|code|multilingual)$")
_SPLIT_RE = re.compile(r"^\w+(\.\w+)*$")
_CONFIG_RE = re.compile(r"^[\w.-]+$")
_REPO_ID_RE = re.compile(r"^(?:[\w.-]+/)?[\w.-]+$")


_FRONT_MATTER_RE = re.compile(r"^\s*---[ \t]*\r?\n(.*?\r?\n)?---[ \t]*(?:\r?\n|$)", re.DOTALL)


def split_front_matter(content: str) -> str | None:
    """The YAML between the leading ``---`` lines, or None when the README has no metadata block."""
    m = _FRONT_MATTER_RE.match(content)
    return (m.group(1) or "") if m else None


def card_body(content: str) -> str:
    """The README without its metadata block."""
    m = _FRONT_MATTER_RE.match(content)
    return content[m.end():] if m else content


def validate_readme(content: str, repo_type: str = "model") -> tuple[list[str], list[str]]:
    errors: list[str] = []
    warnings: list[str] = []
    text = split_front_matter(content)
    if text is None:
        if content.lstrip().startswith("---"):
            return ["the metadata block opened with '---' is never closed by a '---' line"], warnings
        return errors, ["empty or missing yaml metadata in repo card"]
    try:
        meta = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [f"metadata is not valid YAML: {e}".replace("\n", " ")], warnings
    except RecursionError:
        return ["metadata nests too deeply to be read"], warnings
    if meta is None:
        return errors, ["empty or missing yaml metadata in repo card"]
    if not isinstance(meta, dict):
        return [f"metadata must be a mapping of keys to values, got {type(meta).__name__}"], warnings

    _check_license(meta, errors)
    _check_str_list(meta, "tags", errors)
    _check_language(meta, errors)
    if "pretty_name" in meta and not isinstance(meta["pretty_name"], str):
        errors.append(f"'pretty_name' must be a string, got {meta['pretty_name']!r}")
    if repo_type == "dataset":
        _check_dataset(meta, errors)
    elif repo_type == "model":
        _check_model(meta, errors)
    return errors, warnings


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _check_str_list(meta: dict, key: str, errors: list[str], allowed=None, item_re=None) -> None:
    if key not in meta or meta[key] is None:
        return
    for item in _as_list(meta[key]):
        if not isinstance(item, str):
            errors.append(f"'{key}' must be a string or a list of strings, got item {item!r}")
        elif allowed is not None and item not in allowed:
            shown = ", ".join(sorted(allowed)) if len(allowed) <= 12 else "see the Hub's documented values"
            errors.append(f"'{key}': {item!r} is not an allowed value ({shown})")
        elif item_re is not None and not item_re.match(item):
            errors.append(f"'{key}': {item!r} is not well-formed")


def _check_license(meta: dict, errors: list[str]) -> None:
    if "license" not in meta:
        return
    _check_str_list(meta, "license", errors)
    for lic in _as_list(meta["license"]):
        if isinstance(lic, str) and lic not in LICENSES:
            errors.append(f"'license': {lic!r} is not a known license id (e.g. mit, apache-2.0, cc-by-4.0; use "
                          "'other' with license_name/license_link for anything else)")
    if "other" in _as_list(meta["license"]) and not meta.get("license_name"):
        errors.append("'license: other' needs a 'license_name'")


def _check_language(meta: dict, errors: list[str]) -> None:
    _check_str_list(meta, "language", errors, item_re=_LANGUAGE_RE)


def _check_dataset(meta: dict, errors: list[str]) -> None:
    _check_str_list(meta, "size_categories", errors, allowed=SIZE_CATEGORIES)
    _check_str_list(meta, "task_categories", errors, allowed=TASKS)
    _check_str_list(meta, "task_ids", errors)
    _check_str_list(meta, "source_datasets", errors)
    configs = meta.get("configs")
    if configs is not None:
        _check_configs(configs, errors)
    info = meta.get("dataset_info")
    if info is not None:
        for item in _as_list(info):
            if not isinstance(item, dict):
                errors.append(f"'dataset_info' entries must be mappings, got {item!r}")
                continue
            for split in item.get("splits") or []:
                if not isinstance(split, dict) or not isinstance(split.get("name"), str) or not isinstance(
                        split.get("num_examples", 0), int):
                    errors.append(f"'dataset_info.splits' entries need a 'name' and an integer 'num_examples', "
                                  f"got {split!r}")


def _check_configs(configs, errors: list[str]) -> None:
    if not isinstance(configs, list):
        errors.append(f"'configs' must be a list of {{config_name, data_files}} mappings, got {type(configs).__name__}")
        return
    names, defaults = set(), 0
    for i, cfg in enumerate(configs):
        where = f"configs[{i}]"
        if not isinstance(cfg, dict):
            errors.append(f"{where} must be a mapping, got {cfg!r}")
            continue
        name = cfg.get("config_name")
        if not isinstance(name, str) or not _CONFIG_RE.match(name):
            errors.append(f"{where}.config_name must be a name of letters, digits, '_', '-', '.', got {name!r}")
        elif name in names:
            errors.append(f"{where}.config_name {name!r} is used twice")
        names.add(name)
        if cfg.get("default"):
            defaults += 1
        if "default" in cfg and not isinstance(cfg["default"], bool):
            errors.append(f"{where}.default must be true or false, got {cfg['default']!r}")
        if "data_files" in cfg:
            _check_data_files(cfg["data_files"], f"{where}.data_files", errors)
        if "data_dir" in cfg and not isinstance(cfg["data_dir"], str):
            errors.append(f"{where}.data_dir must be a string, got {cfg['data_dir']!r}")
    if defaults > 1:
        errors.append(f"'configs': {defaults} configs are marked default; at most one may be")


def _check_data_files(data_files, where: str, errors: list[str]) -> None:
    if isinstance(data_files, str):
        return
    if not isinstance(data_files, list) or not data_files:
        errors.append(f"{where} must be a path pattern, a list of them, or a list of {{split, path}}, got "
                      f"{data_files!r}")
        return
    splits = set()
    for item in data_files:
        if isinstance(item, str):
            continue
        if not isinstance(item, dict) or set(item) - {"split", "path"}:
            errors.append(f"{where} entries must be strings or {{split, path}} mappings, got {item!r}")
            continue
        split, path = item.get("split"), item.get("path")
        if not isinstance(split, str) or not _SPLIT_RE.match(split):
            errors.append(f"{where}: split name {split!r} must match {_SPLIT_RE.pattern}")
        elif split in splits:
            errors.append(f"{where}: split {split!r} is listed twice")
        splits.add(split)
        paths = _as_list(path)
        if not paths or not all(isinstance(p, str) and p for p in paths):
            errors.append(f"{where}: split {split!r} needs 'path' as a non-empty string or list of strings, "
                          f"got {path!r}")


def _check_model(meta: dict, errors: list[str]) -> None:
    _check_str_list(meta, "base_model", errors, item_re=_REPO_ID_RE)
    _check_str_list(meta, "datasets", errors, item_re=_REPO_ID_RE)
    _check_str_list(meta, "pipeline_tag", errors, allowed=TASKS)
    if "library_name" in meta and not isinstance(meta["library_name"], str):
        errors.append(f"'library_name' must be a string, got {meta['library_name']!r}")
    index = meta.get("model-index")
    if index is None:
        return
    if not isinstance(index, list):
        errors.append("'model-index' must be a list of {name, results}")
        return
    for i, model in enumerate(index):
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append(f"model-index[{i}] needs a 'name' string")
            continue
        for j, result in enumerate(model.get("results") or []):
            where = f"model-index[{i}].results[{j}]"
            if not isinstance(result, dict):
                errors.append(f"{where} must be a mapping")
                continue
            if not isinstance(result.get("task"), dict) or not isinstance(result["task"].get("type"), str):
                errors.append(f"{where}.task.type must be a string")
            ds = result.get("dataset")
            if not isinstance(ds, dict) or not isinstance(ds.get("type"), str) or not isinstance(ds.get("name"), str):
                errors.append(f"{where}.dataset needs 'type' and 'name' strings")
            metrics = result.get("metrics")
            if not isinstance(metrics, list) or not metrics:
                errors.append(f"{where}.metrics must be a non-empty list")
                continue
            for k, metric in enumerate(metrics):
                if not isinstance(metric, dict) or not isinstance(metric.get("type"), str) or "value" not in metric:
                    errors.append(f"{where}.metrics[{k}] needs a 'type' string and a 'value'")
