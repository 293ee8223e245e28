"""The one config system: a misspelled key in the YAML of `mathgenie run`, `eval`, `train` or `demo` is an error that
names the key and the file, before anything runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mathgenie.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_run_names_the_misspelled_key_and_the_file(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text((REPO / "configs" / "demo.yaml").read_text() + "\nsolve:\n  temprature: 0.5\n")
    assert main(["run", str(config), f"output_dir={tmp_path / 'out'}"]) == 2
    out = capsys.readouterr().out
    assert str(config) in out and "unknown config key(s) ['temprature'] in section 'solve'" in out
    assert not (tmp_path / "out").exists()


def test_eval_names_the_misspelled_key_and_the_file(tmp_path):
    config = tmp_path / "eval.yaml"
    config.write_text("model: smollm2\nbenchmarks: [gsm8k]\ntemprature: 0.0\n")
    with pytest.raises(SystemExit, match=rf"{config}: unknown config key\(s\) \['temprature'\] at the top level"):
        main(["eval", "--config", str(config), "--output-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_train_names_the_misspelled_key_and_the_file(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text((REPO / "configs" / "train_backtranslation.yaml").read_text() + "\nlearnin_rate: 1.0e-5\n")
    with pytest.raises(SystemExit, match=rf"{config}: unknown config key\(s\) \['learnin_rate'\]"):
        main(["train", str(config)])


def test_demo_names_the_misspelled_key_and_the_file_before_starting_the_hub(tmp_path, capsys):
    config = tmp_path / "demo.yaml"
    config.write_text((REPO / "configs" / "demo.yaml").read_text() + "\naugment:\n  round: 1\n")
    with pytest.raises(SystemExit, match=rf"{config}: unknown config key\(s\) \['round'\] in section 'augment'"):
        main(["demo", "--config", str(config), "--output-dir", str(tmp_path / "out")])
    assert "local Hub" not in capsys.readouterr().out


def test_a_value_of_the_wrong_type_names_the_field():
    from mathgenie.config import ConfigError
    from mathgenie.generation.config import load_config

    with pytest.raises(ConfigError, match=r"decontaminate.eval_sets\[\]='gsm9k': expected one of"):
        load_config(None, ["decontaminate.eval_sets=[gsm9k]"])


@pytest.mark.parametrize("names, message", [
    ("{verifed: x}", "push.names has ['verifed'], which no stage writes"),
    ("{verified: mathgenie-verified}", "stages 'verify' and 'decontaminate' would both be pushed as"),
])
def test_bad_push_names_stop_the_run_before_any_stage(tmp_path, names, message):
    from mathgenie.generation.config import load_config
    from mathgenie.generation.pipeline import Pipeline

    cfg = load_config(REPO / "configs" / "demo.yaml", [f"output_dir={tmp_path}", f"push.names={names}"])
    with pytest.raises(ValueError, match=re.escape(message)):
        Pipeline(cfg).run()
    assert not any(tmp_path.iterdir())
