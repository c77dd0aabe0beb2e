"""Every door's bad input: one line on stderr that names the culprit, a non-zero exit, never a
traceback (issue 11). The doors run in this process (their `main(argv)`), and a few of them in
a subprocess as a user runs them."""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import tiny_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_CUDA = not torch.cuda.is_available()


def door(name):
    spec = importlib.util.spec_from_file_location(f"door_{name}", os.path.join(ROOT, "python", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("doors")
    from sedd.training import Trainer
    Trainer(tiny_run_config(base / "run", steps=2)).fit()
    (base / "empty.txt").write_text("")
    (base / "text.txt").write_text("some words to train a tokenizer on. " * 50)
    (base / "empty.jsonl").write_text("\n")
    (base / "nojson").mkdir()
    (base / "nojson" / "config.json").write_text("{not json")
    (base / "nojson" / "model.safetensors").write_bytes(b"x")
    (base / "noweights").mkdir()
    shutil.copy(base / "run" / "checkpoints" / "step-00000002" / "config.json", base / "noweights")
    (base / "corrupt").mkdir()
    shutil.copy(base / "run" / "checkpoints" / "step-00000002" / "config.json", base / "corrupt")
    (base / "corrupt" / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    partial = base / "partial"
    shutil.copytree(base / "run", partial)
    os.remove(partial / "checkpoints" / "step-00000002" / "ema.safetensors")
    (base / "emptyrun").mkdir()
    return base


def cases():
    t, s, e = "train", "sample", "evaluate"
    c = [
        # train.py
        (t, ["--data", "{b}/missing.txt"], "--data {b}/missing.txt: no such file or folder"),
        (t, ["--data", "{b}/empty.txt"], "empty"),
        (t, ["--data", "{b}/text.txt", "--tokenizer", "nonsense"], "unknown tokenizer 'nonsense'"),
        (t, ["--data", "{b}/text.txt", "--tokenizer", "gpt2:{b}/missing.tiktoken"], "no tiktoken ranks file"),
        (t, ["--device", "tpu"], "--device 'tpu': unknown device"),
        (t, ["--resume", "--out", "{b}/emptyrun"], "--resume: no checkpoint"),
        (t, ["--hidden-size", "100", "--n-heads", "3"], "--hidden-size 100 is not divisible by --n-heads 3"),
        (t, ["--steps", "0"], "--steps must be >= 1"),
        (t, ["--batch-size", "-4"], "--batch-size must be >= 1"),
        (t, ["--seq-len", "0"], "--seq-len must be >= 1"),
        (t, ["--hidden-size", "0"], "--hidden-size must be >= 1"),
        (t, ["--lr", "0"], "--lr must be > 0 (finite)"),
        (t, ["--lr", "nan"], "--lr must be > 0 (finite)"),
        (t, ["--ema", "1"], "--ema must be in [0, 1)"),
        (t, ["--warmup", "-1"], "--warmup must be >= 0"),
        (t, ["--dropout", "1.5"], "--dropout must be in [0, 1)"),
        (t, ["--accum", "0"], "--accum must be >= 1"),
        (t, ["--seq-len", "200000"], "--seq-len 200000 would need about"),
        (t, ["--init-from", "{b}/nowhere"], "does not exist"),
        (t, ["--init-from", "{b}/nojson", "--data", "{b}/text.txt"], "config.json is not JSON"),
        (t, ["--preset", "huge"], "invalid choice: 'huge'"),
        # sample.py
        (s, ["--checkpoint", "{b}/nowhere"], "checkpoint '{b}/nowhere' does not exist"),
        (s, ["--checkpoint", "{b}/nojson"], "config.json is not JSON"),
        (s, ["--checkpoint", "{b}/noweights"], "has a config.json but no weights"),
        (s, ["--checkpoint", "{b}/corrupt"], "model.safetensors is corrupt"),
        (s, ["--checkpoint", "{b}/partial"], "is missing ema.safetensors"),
        (s, ["--checkpoint", "{b}/emptyrun"], "no checkpoint found in"),
        (s, ["--checkpoint", "{b}/run", "--device", "gpu"], "--device 'gpu': unknown device"),
        (s, ["--checkpoint", "{b}/run", "--steps", "0"], "--steps must be >= 1"),
        (s, ["--checkpoint", "{b}/run", "--num-samples", "-2"], "--num-samples must be >= 1"),
        (s, ["--checkpoint", "{b}/run", "--length", "0"], "--length must be >= 1"),
        (s, ["--checkpoint", "{b}/run", "--window", "48"], "window 48 (--window) is longer than the model's window 24"),
        (s, ["--checkpoint", "{b}/run", "--length", "96", "--stride", "30"], "got 30 (--stride is longer than the window)"),
        (s, ["--checkpoint", "{b}/run", "--stride", "0"], "--stride must be >= 1"),
        (s, ["--checkpoint", "{b}/run", "--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
        (s, ["--checkpoint", "{b}/run", "--top-p", "x"], "--top-p must be in (0, 1], got 'x'"),
        (s, ["--checkpoint", "{b}/run", "--temperature", "0"], "--temperature must be > 0"),
        (s, ["--checkpoint", "{b}/run", "--tokens-per-step", "2"], "tokens_per_step applies to predictor 'first_hitting' or 'confidence', not 'analytic'"),
        (s, ["--checkpoint", "{b}/run", "--threshold", "0.9"], "threshold applies to predictor 'confidence', not 'analytic'"),
        (s, ["--checkpoint", "{b}/run", "--predictor", "confidence", "--threshold", "0"], "--threshold must be in (0, 1], got 0"),
        (s, ["--checkpoint", "{b}/run", "--predictor", "confidence", "--threshold", "0.9", "--tokens-per-step", "2"], "threshold and tokens_per_step are two rules"),
        (s, ["--checkpoint", "{b}/run", "--predictor", "confidence", "--rank-by", "most"], "invalid choice: 'most'"),
        (s, ["--checkpoint", "{b}/run", "--predictor", "remdm", "--greedy"], "greedy applies to predictor 'confidence', not 'remdm'"),
        (s, ["--checkpoint", "{b}/run", "--predictor", "remdm", "--eta", "1.5"], "--eta must be in [0, 1], got 1.5"),
        (s, ["--checkpoint", "{b}/run", "--predictor", "remdm", "--remask", "conf", "--eta", "0.1"], "eta applies to remask 'cap', 'rescale' or 'loop', not 'conf'"),
        (s, ["--checkpoint", "{b}/run", "--predictor", "remdm", "--loop", "0.5,0.6,0.9"], "needs 0 < T_OFF < T_ON < 1"),
        (s, ["--checkpoint", "{b}/run", "--predictor", "remdm", "--loop", "a,b"], "--loop must be T_ON,T_OFF,ALPHA_ON"),
        (s, ["--checkpoint", "{b}/run", "--predictor", "remdm", "--remask", "cap", "--loop", "0.5,0.1,0.9"], "loop applies to remask 'loop', not 'cap'"),
        (s, ["--checkpoint", "{b}/run", "--remask", "cap"], "remask applies to predictor 'remdm', not 'analytic'"),
        (s, ["--checkpoint", "{b}/run", "--kv-cache", "triple"], "invalid choice: 'triple'"),
        (s, ["--checkpoint", "{b}/run", "--refresh", "2"], "refresh applies to kv_cache='dual' (--kv-cache dual)"),
        (s, ["--checkpoint", "{b}/run", "--block-length", "0"], "--block-length must be >= 1"),
        (s, ["--checkpoint", "{b}/run", "--stop-at-eos"], "this tokenizer has no end-of-sequence token"),
        (s, ["--checkpoint", "{b}/run", "--stop-at-eos", "--eos", "the a"], "--eos 'the a' is 2 tokens"),
        (s, ["--checkpoint", "{b}/run", "--stop-at-eos", "--eos", "zzzq"], "--eos 'zzzq': word 'zzzq' is not in the built-in language's vocabulary"),
        (s, ["--checkpoint", "{b}/run", "--eos", "."], "--eos is read with --stop-at-eos only"),
        (s, ["--checkpoint", "{b}/run", "--tokenizer", "nonsense"], "unknown tokenizer 'nonsense'"),
        (s, ["--checkpoint", "{b}/run", "--tokenizer", "char"], "tokenizer 'char' has 27 tokens but the checkpoint's vocabulary has"),
        (s, ["--checkpoint", "{b}/run", "--out", "{b}/no/such/dir/s.jsonl"], "the folder {b}/no/such/dir does not exist"),
        (s, ["--checkpoint", "{b}/run", "--predictor", "leap"], "invalid choice: 'leap'"),
        (s, ["--checkpoint", "{b}/run", "--cuda-graph", "--device", "cpu"], "cuda_graph=True (--cuda-graph) needs a CUDA model (--device cuda)"),
        (t, ["--compile=yes"], "argument --compile: ignored explicit argument 'yes'"),
        (s, [], "the following arguments are required: --checkpoint"),
        # evaluate.py
        (e, ["--checkpoint", "{b}/nowhere"], "does not exist"),
        (e, ["--checkpoint", "{b}/nojson"], "config.json is not JSON"),
        (e, ["--checkpoint", "{b}/corrupt"], "model.safetensors is corrupt"),
        (e, ["--checkpoint", "{b}/run", "--timesteps", "0"], "--timesteps must be >= 1"),
        (e, ["--checkpoint", "{b}/run", "--num-sequences", "1"], "--num-sequences must be >= 2 or 0"),
        (e, ["--checkpoint", "{b}/run", "--batch-size", "0"], "--batch-size must be >= 1"),
        (e, ["--checkpoint", "{b}/run", "--device", "tpu"], "unknown device"),
        (e, ["--checkpoint", "{b}/run", "--data", "{b}/missing.txt", "--tokenizer", "builtin"], "no such file or folder"),
        (e, ["--samples", "{b}/missing.jsonl"], "No such file or directory"),
        (e, ["--samples", "{b}/empty.jsonl", "--data", "builtin"], "no samples"),
        (e, [], "--checkpoint is required"),
        # export.py
        ("export", ["--checkpoint", "{b}/nowhere", "--out", "{b}/x"], "does not exist"),
    ]
    if NO_CUDA:
        c += [(t, ["--device", "cuda"], "--device cuda: CUDA is not available here"),
              (s, ["--checkpoint", "{b}/run", "--device", "cuda"], "CUDA is not available"),
              (e, ["--checkpoint", "{b}/run", "--device", "cuda:0"], "CUDA is not available")]
    return c


@pytest.mark.parametrize("name, args, message", cases(),
                         ids=[f"{n}:{' '.join(a)[:48]}" for n, a, _ in cases()])
def test_bad_input_is_one_clear_line(files, capsys, name, args, message):
    base = str(files)
    args = [a.replace("{b}", base) for a in args]
    extra = ["--out", os.path.join(base, "out")] if name == "train" and "--out" not in args else []
    with pytest.raises(SystemExit) as exc:
        door(name).main(args + extra)
    code = exc.value.code           # run_door: SystemExit("door.py: message"), printed by Python
    err = capsys.readouterr().err + (code + "\n" if isinstance(code, str) else "")
    assert code not in (0, None), err
    assert message.replace("{b}", base) in err, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{name}.py:"), err


@pytest.mark.parametrize("name, args, message", [
    ("sample", ["--checkpoint", "{b}/corrupt"], "is corrupt"),
    ("train", ["--seq-len", "200000", "--out", "{b}/out"], "would need about"),
])
def test_bad_input_in_a_real_process(files, name, args, message):
    args = [a.replace("{b}", str(files)) for a in args]
    r = subprocess.run([sys.executable, os.path.join(ROOT, "python", f"{name}.py"), *args],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


