"""sedd.config: the presets, TrainConfig resolved from preset ← checkpoint ← flags, each field's
range check (the same message as the flag's), the flags generated from the fields, and the
refusal of another family's options."""

import os
import subprocess
import sys

import pytest

from sedd.config import TrainConfig

from conftest import ROOT


@pytest.mark.parametrize("field, value, match", [
    ("steps", 0, "--steps must be >= 1"), ("batch_size", 0, "--batch-size"),
    ("lr", -1.0, "--lr must be > 0"), ("ema", 1.5, "--ema"), ("graph", "masked", "--graph"),
    ("accum", 0, "--accum")])
def test_bad_config(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_preset("tiny", **{field: value})
    with pytest.raises(ValueError, match="preset must be one of"):
        TrainConfig.from_preset("huge")


def test_cli_rejects_bad_values(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "python", "train.py"), "--steps", "0",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--steps must be >= 1" in r.stderr


def test_config_refuses_sedd_settings():
    from sedd.config import TrainConfig
    with pytest.raises(ValueError, match="--model ar has no --graph"):
        TrainConfig.from_preset("tiny", family="ar", graph="uniform")
    with pytest.raises(ValueError, match="--parametrisation"):
        TrainConfig.from_preset("tiny", family="ar", parametrisation="clean")


def test_one_preset_table_and_the_resolution_order(tmp_path):
    """Preset ← checkpoint ← flags: the preset fills what is not given (None = not given), a flag
    overrides it; the family's defaults come last (SEDD: the graph's noise)."""
    from sedd.config import PRESETS, model_preset, resolve_config
    cfg = resolve_config("tiny", steps=7, lr=None)
    assert cfg.steps == 7 and cfg.lr == PRESETS["tiny"]["lr"] and cfg.noise == "loglinear"
    assert resolve_config("tiny", graph="uniform").noise == "geometric"
    assert model_preset("micro") == {k: PRESETS["micro"][k] for k in
                                     ("hidden_size", "n_blocks", "n_heads", "cond_dim", "dropout")}
    with pytest.warns(DeprecationWarning, match="`model` is now `family`"):
        assert resolve_config("tiny", model="ar").family == "ar"


def test_every_family_option_is_a_flag_and_refused_by_the_others():
    """The flags are generated from the fields, a family's own options included (--graph is
    SEDD's); --model and --family name the same field."""
    import argparse
    from sedd.config import add_flags, from_args
    from sedd.families import FAMILIES
    p = argparse.ArgumentParser()
    add_flags(p)
    for family in FAMILIES.values():
        for name, f in family.options.items():
            flag = f.metadata.get("flag") or "--" + name.replace("_", "-")
            assert flag in p._option_string_actions, flag
    a = from_args(p.parse_args(["--family", "ar", "--steps", "3"]))
    b = from_args(p.parse_args(["--model", "ar", "--steps", "3"]))
    assert a.family == b.family == "ar" and a == b
    with pytest.raises(ValueError, match="--model ar has no --no-fused-linear"):
        from_args(p.parse_args(["--model", "ar", "--no-fused-linear"]))

