"""What every script's command line promises: a default shown for every option, a misspelt option named."""
from __future__ import annotations

import re

import pytest

from conftest import ROOT, one_line_error, run_script

SCRIPTS = ["data_augmentation.py", "attn_regression.py", "attn_retrain.py", "attn_test.py", "attn_deploy.py",
           "au_analysis.py", "extract_features.py", "compare.py", "bench.py", "data/synthetic/prepare.py"]


def option_entries(help_text: str) -> list[str]:
    """Each option's entry of a --help text, on one line."""
    body = help_text.split("options:", 1)[1]
    return [" ".join(entry.split()) for entry in re.split(r"\n(?=  -)", body) if entry.strip().startswith("-")]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_a_default_for_every_option_that_is_not_required(script, capsys):
    import runpy
    import sys

    argv = sys.argv
    sys.argv = [str(ROOT / script), "--help"]
    try:
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:
        sys.argv = argv
    assert stop.value.code == 0
    entries = option_entries(capsys.readouterr().out)
    assert entries
    required = {"-o OUTPUT, --output OUTPUT", "--weights WEIGHTS"}
    missing = [e for e in entries if "default" not in e and not e.startswith("-h")
               and not any(e.startswith(r) for r in required)]
    assert missing == []


def test_a_misspelt_option_is_named_rather_than_a_required_one_missing(tmp_path):
    line = one_line_error(run_script("data_augmentation.py", tmp_path / "x.csv", "--ouput", tmp_path / "a.csv"),
                          "unknown option --ouput; did you mean --output?")
    assert "required" not in line
    assert "unknown option --frobnicate (see --help)" in one_line_error(
        run_script("attn_deploy.py", tmp_path, "--frobnicate"))
