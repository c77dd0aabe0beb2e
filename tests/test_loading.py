"""sedd.loading: every checkpoint format through one load — this project's (corrupt or partial
folders, Hub folders) and the paper's layouts through every door; export. (Resuming a training
run: test_training.py.)

The folders are written here from the layouts of the paper's code
(louaaron/Score-Entropy-Discrete-Diffusion), with small random weights:
- a Hub folder: config.json = the hydra config as JSON, model.safetensors or pytorch_model.bin;
- a training run: .hydra/config.yaml, checkpoints-meta/checkpoint.pth and
  checkpoints/checkpoint_N.pth, each {model, ema: {decay, num_updates, shadow_params}, optimizer,
  step} with shadow_params in the order of the paper's SEDD.parameters().
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from sedd.core.graphs import Absorbing, Uniform
from sedd.loading.checkpoints import load_checkpoint
from sedd.loading import (CheckpointError, load, read_config,
                          save_pretrained)
from sedd.config import model_preset
from sedd.nn import DDiT, ModelConfig
from sedd.core.noise import Geometric, LogLinear

from sedd.training import Trainer

from conftest import small_cfg, tiny_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_RANKS = os.environ.get(
    "SEDD_TEST_GPT2_RANKS", os.path.join(ROOT, "..", "shared", "data", "gpt2.tiktoken"))
H, C, BLOCKS, HEADS, LENGTH = 32, 16, 2, 2, 32


def paper_parameter_order(n_blocks):
    """SEDD.parameters() of the paper's model/transformer.py, in registration order."""
    names = ["vocab_embed.embedding", "sigma_map.mlp.0.weight", "sigma_map.mlp.0.bias",
             "sigma_map.mlp.2.weight", "sigma_map.mlp.2.bias"]
    for i in range(n_blocks):
        names += [f"blocks.{i}.{k}" for k in (
            "norm1.weight", "attn_qkv.weight", "attn_out.weight", "norm2.weight", "mlp.0.weight",
            "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "adaLN_modulation.weight",
            "adaLN_modulation.bias")]
    return names + ["output_layer.norm_final.weight", "output_layer.linear.weight",
                    "output_layer.linear.bias", "output_layer.adaLN_modulation.weight",
                    "output_layer.adaLN_modulation.bias"]


def paper_config(tokens, graph="absorb", noise="loglinear", sigma_min=1e-4, sigma_max=20.0,
                 dropout=0.1):
    """The paper's configs/config.yaml + configs/model/small.yaml, shrunk."""
    return {
        "ngpus": 8, "tokens": tokens,
        "training": {"batch_size": 512, "accum": 1, "n_iters": 1300001, "snapshot_freq": 50000,
                     "log_freq": 50, "eval_freq": 100, "snapshot_freq_for_preemption": 10000,
                     "weight": "standard", "snapshot_sampling": True, "ema": 0.9999},
        "data": {"train": "openwebtext", "valid": "wikitext103", "cache_dir": "data"},
        "graph": {"type": graph, "file": "data", "report_all": False},
        "noise": {"type": noise, "sigma_min": sigma_min, "sigma_max": sigma_max},
        "sampling": {"predictor": "euler", "steps": 128, "noise_removal": True},
        "eval": {"batch_size": 512, "perplexity": True, "perplexity_batch_size": 32},
        "optim": {"weight_decay": 0, "optimizer": "AdamW", "lr": 3e-4, "beta1": 0.9,
                  "beta2": 0.999, "eps": 1e-8, "warmup": 2500, "grad_clip": 1.0},
        "model": {"name": "small", "type": "ddit", "hidden_size": H, "cond_dim": C,
                  "length": LENGTH, "n_blocks": BLOCKS, "n_heads": HEADS,
                  "scale_by_sigma": graph == "absorb", "dropout": dropout},
    }


def random_state(tokens, graph="absorb", seed=0):
    """A state dict of the paper's SEDD for this config (every weight random, none zero)."""
    V = tokens + (1 if graph == "absorb" else 0)
    model = DDiT(ModelConfig(vocab_size=V, hidden_size=H, n_blocks=BLOCKS, n_heads=HEADS,
                             cond_dim=C, scale_by_sigma=graph == "absorb", max_length=LENGTH))
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    for name in paper_parameter_order(BLOCKS):
        sd[name] = torch.randn(sd[name].shape, generator=g) * 0.2
    return sd


def reference_model(tokens, sd, graph="absorb"):
    """Our DDiT built by hand for the paper's config (V = tokens + 1 for absorb)."""
    V = tokens + (1 if graph == "absorb" else 0)
    m = DDiT(ModelConfig(vocab_size=V, hidden_size=H, n_blocks=BLOCKS, n_heads=HEADS, cond_dim=C,
                         dropout=0.1, scale_by_sigma=graph == "absorb", max_length=LENGTH))
    m.load_state_dict(sd, strict=True)
    return m.eval()


def write_paper_hub(folder, cfg, sd, fmt="safetensors"):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    if fmt == "safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(folder, "model.safetensors"))
    else:
        torch.save(sd, os.path.join(folder, "pytorch_model.bin"))
    return str(folder)


def hydra_yaml(cfg):
    import yaml
    text = yaml.safe_dump(cfg, sort_keys=False)
    # hydra writes what the user wrote: the paper's 1e-4 reads back as a string under PyYAML
    return text.replace("sigma_min: 0.0001", "sigma_min: 1e-4")


def write_paper_run(folder, cfg, raw, ema, step=1000, numbered=(), meta=True):
    os.makedirs(os.path.join(folder, ".hydra"), exist_ok=True)
    with open(os.path.join(folder, ".hydra", "config.yaml"), "w") as fh:
        fh.write(hydra_yaml(cfg))
    model = DDiT(ModelConfig(vocab_size=raw["vocab_embed.embedding"].shape[0], hidden_size=H,
                             n_blocks=BLOCKS, n_heads=HEADS, cond_dim=C))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    state = {"optimizer": opt.state_dict(), "model": raw,
             "ema": {"decay": 0.9999, "num_updates": step,
                     "shadow_params": [ema[k].clone() for k in paper_parameter_order(BLOCKS)]},
             "step": step}
    if meta:
        os.makedirs(os.path.join(folder, "checkpoints-meta"), exist_ok=True)
        torch.save(state, os.path.join(folder, "checkpoints-meta", "checkpoint.pth"))
    for n in numbered:
        os.makedirs(os.path.join(folder, "checkpoints"), exist_ok=True)
        torch.save({**state, "step": n}, os.path.join(folder, "checkpoints", f"checkpoint_{n}.pth"))
    return str(folder)


def outputs(model, V, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (2, 12), generator=g)
    sigma = torch.tensor([0.3, 2.5])
    with torch.no_grad():
        return model(x, sigma)


@pytest.fixture(scope="module")
def gpt2_ranks(tmp_path_factory):
    """GPT-2's BPE ranks (../shared/data), else a synthetic ranks file of GPT-2's size (50256
    byte strings: the 256 bytes, then two-byte merges) read by the same tiktoken code."""
    if os.path.exists(SHARED_RANKS):
        return os.path.abspath(SHARED_RANKS)
    import base64
    toks = [bytes([b]) for b in range(256)]
    toks += [bytes([a, b]) for a in range(97, 123) for b in range(256)][:50256 - 256]
    i = 0
    while len(toks) < 50256:
        toks.append(b"  " + bytes([i % 256, i // 256 % 256]) + b"x")
        i += 1
    path = tmp_path_factory.mktemp("ranks") / "gpt2.tiktoken"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for r, t in enumerate(toks)))
    return str(path)


# ------------------------------------------------------------------ the paper's Hub folders
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_paper_hub_folder_loads_with_its_graph_noise_and_outputs(tmp_path, fmt):
    tokens = 100
    sd = random_state(tokens)
    folder = write_paper_hub(tmp_path / "sedd-small", paper_config(tokens), sd, fmt)
    p = load(folder, tokenizer=False)
    assert p.run.layout == "paper" and p.run.n == tokens and p.model.config.vocab_size == tokens + 1
    assert p.model.config.scale_by_sigma and p.model.config.dropout == 0.1
    assert torch.equal(outputs(p.model, tokens + 1), outputs(reference_model(tokens, sd), tokens + 1))
    graph, noise = p.run.build_graph(), p.run.build_noise()
    assert isinstance(graph, Absorbing) and graph.n == tokens and graph.V == tokens + 1
    assert isinstance(noise, LogLinear) and noise.eps == 1e-3     # the paper's fixed ε
    assert any("sigma_min and sigma_max are unused" in n for n in p.run.notes)


def test_paper_geometric_schedule_takes_the_configs_range(tmp_path):
    tokens = 64
    sd = random_state(tokens, "uniform")
    cfg = paper_config(tokens, "uniform", "geometric", sigma_min=1e-3, sigma_max=7.5)
    p = load(write_paper_hub(tmp_path / "u", cfg, sd), tokenizer=False)
    noise, graph = p.run.build_noise(), p.run.build_graph()
    assert isinstance(noise, Geometric) and (noise.sigma_min, noise.sigma_max) == (1e-3, 7.5)
    assert isinstance(graph, Uniform) and graph.V == tokens and not p.model.config.scale_by_sigma
    assert torch.equal(outputs(p.model, tokens),
                       outputs(reference_model(tokens, sd, "uniform"), tokens))
    assert p.run.notes == []


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["graph"].update(type="masked"), "unknown graph type 'masked'"),
    (lambda c: c["noise"].update(type="cosine"), "unknown noise type 'cosine'"),
    (lambda c: c["noise"].update(type="geometric", sigma_min=5, sigma_max=1), "sigma_min < sigma_max"),
    (lambda c: c["noise"].update(learnable=True), "unknown 'learnable'"),
    (lambda c: c["model"].pop("n_heads"), "model is missing n_heads"),
    (lambda c: c["model"].update(n_heads=3), "not divisible by n_heads 3"),
    (lambda c: c.update(tokens="many"), "tokens must be a number"),
])
def test_paper_config_errors_name_the_field(tmp_path, edit, message):
    cfg = paper_config(100)
    edit(cfg)
    folder = write_paper_hub(tmp_path / "bad", cfg, random_state(100))
    with pytest.raises(CheckpointError, match=message):
        load(folder, tokenizer=False)


def test_weights_that_do_not_match_are_named(tmp_path):
    sd = random_state(100)
    cfg = paper_config(100)
    missing = dict(sd)
    del missing["blocks.1.attn_out.weight"]
    with pytest.raises(CheckpointError, match=r"missing 1 parameter\(s\): blocks.1.attn_out.weight"):
        load(write_paper_hub(tmp_path / "a", cfg, missing), tokenizer=False)
    extra = {**sd, "score_head.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"unexpected 1 parameter\(s\): score_head.weight"):
        load(write_paper_hub(tmp_path / "b", cfg, extra), tokenizer=False)
    cfg2 = paper_config(100)
    cfg2["model"]["hidden_size"] = 64
    cfg2["model"]["n_heads"] = 4
    with pytest.raises(CheckpointError, match=r"vocab_embed.embedding has shape \(101, 32\), the "
                                              r"model \(from the config\) expects \(101, 64\)"):
        load(write_paper_hub(tmp_path / "c", cfg2, sd), tokenizer=False)
    # DDP's module. prefix is taken off
    prefixed = {"module." + k: v for k, v in sd.items()}
    p = load(write_paper_hub(tmp_path / "d", cfg, prefixed), tokenizer=False)
    assert torch.equal(p.model.state_dict()["vocab_embed.embedding"], sd["vocab_embed.embedding"])


def test_paper_hub_repo_id_through_the_offline_hub_cache(tmp_path, gpt2_ranks):
    """`--checkpoint louaaron/sedd-small` resolved by huggingface_hub from its cache with
    HF_HUB_OFFLINE=1 (the real hub code, no network), then sampled with GPT-2's tokenizer."""
    tokens = 50257
    sd = random_state(tokens)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--louaaron--sedd-small"
    write_paper_hub(repo / "snapshots" / commit, paper_config(tokens), sd)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "s.jsonl"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "python", "sample.py"), "--checkpoint",
                        "louaaron/sedd-small", "--tokenizer", f"gpt2:{gpt2_ranks}", "--steps", "4",
                        "--num-samples", "2", "--length", "16", "--prefix", "Hello world",
                        "--device", "cpu", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    from sedd.data import get_tokenizer
    tok = get_tokenizer(f"gpt2:{gpt2_ranks}")
    prefix = tok.encode("Hello world")
    assert len(rows) == 2 and all(len(row["tokens"]) == 16 for row in rows)
    assert all(row["tokens"][:len(prefix)] == prefix and max(row["tokens"]) < tokens for row in rows)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "python", "sample.py"), "--checkpoint",
                        "louaaron/sedd-tiny", "--device", "cpu"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 1 and "neither a local checkpoint nor a reachable Hub repository" \
        in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_vocabulary_must_agree_with_the_tokenizer(tmp_path, gpt2_ranks):
    folder = write_paper_hub(tmp_path / "v", paper_config(1000), random_state(1000))
    with pytest.raises(ValueError, match="has 50257 tokens but the checkpoint's vocabulary has "
                                         "1000 real tokens"):
        load(folder, tokenizer=f"gpt2:{gpt2_ranks}")


# ------------------------------------------------------------------ the paper's training runs
def test_paper_run_folder_ema_by_default_raw_on_request(tmp_path):
    tokens = 100
    raw, ema = random_state(tokens, seed=1), random_state(tokens, seed=2)
    folder = write_paper_run(tmp_path / "exp_local" / "run", paper_config(tokens), raw, ema)
    V = tokens + 1
    p = load(folder, tokenizer=False)
    assert p.weights == "ema" and p.run.layout == "paper" and p.state["step"] == 1000
    assert torch.equal(outputs(p.model, V), outputs(reference_model(tokens, ema), V))
    q = load(folder, use_ema=False, tokenizer=False)
    assert q.weights == "raw"
    assert torch.equal(outputs(q.model, V), outputs(reference_model(tokens, raw), V))
    assert not torch.equal(outputs(p.model, V), outputs(q.model, V))
    assert isinstance(p.run.build_noise(), LogLinear) and p.run.ema_decay == 0.9999


def test_paper_run_numbered_checkpoints_and_a_pth_file(tmp_path):
    tokens = 50
    raw, ema = random_state(tokens, seed=1), random_state(tokens, seed=2)
    folder = write_paper_run(tmp_path / "run", paper_config(tokens), raw, ema, numbered=(5, 12),
                             meta=False)
    p = load(folder, tokenizer=False)               # the newest numbered one
    assert p.path.endswith("checkpoint_12.pth") and p.state["step"] == 12
    one = load(os.path.join(folder, "checkpoints", "checkpoint_5.pth"), use_ema=False, tokenizer=False)
    assert one.state["step"] == 5
    assert torch.equal(outputs(one.model, tokens + 1), outputs(reference_model(tokens, raw), tokens + 1))


def test_paper_run_errors(tmp_path):
    tokens = 50
    raw, ema = random_state(tokens, seed=1), random_state(tokens, seed=2)
    folder = write_paper_run(tmp_path / "run", paper_config(tokens), raw, ema)
    meta = os.path.join(folder, "checkpoints-meta", "checkpoint.pth")
    state = torch.load(meta, weights_only=True)
    state["ema"]["shadow_params"] = state["ema"]["shadow_params"][:-1]
    torch.save(state, meta)
    with pytest.raises(CheckpointError, match="shadow_params has 29 tensors, the model has 30"):
        load(folder, tokenizer=False)
    assert load(folder, use_ema=False, tokenizer=False).weights == "raw"
    state["ema"]["shadow_params"] = [ema[k] for k in reversed(paper_parameter_order(BLOCKS))]
    torch.save(state, meta)
    with pytest.raises(CheckpointError, match=r"shadow_params\[0\] has shape .*parameter "
                                              r"vocab_embed.embedding expects \(51, 32\)"):
        load(folder, tokenizer=False)
    with open(meta, "wb") as fh:
        fh.write(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load(folder, tokenizer=False)
    os.remove(os.path.join(folder, ".hydra", "config.yaml"))
    with pytest.raises(CheckpointError, match="no checkpoint found|config.yaml is missing"):
        load(folder, tokenizer=False)


# ------------------------------------------------------------------ the doors
def _door(name, *args, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "python", name), *args],
                          capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def paper_gpt2(tmp_path_factory):
    """A paper Hub folder and a paper run folder at GPT-2's vocabulary (tiny widths)."""
    base = tmp_path_factory.mktemp("paper")
    tokens = 50257
    raw, ema = random_state(tokens, seed=3), random_state(tokens, seed=4)
    hub = write_paper_hub(base / "hub", paper_config(tokens), ema)
    run = write_paper_run(base / "run", paper_config(tokens), raw, ema)
    return hub, run, raw, ema


def test_sample_and_evaluate_doors_read_paper_folders(paper_gpt2, gpt2_ranks, tmp_path):
    hub, run, raw, ema = paper_gpt2
    tok = f"gpt2:{gpt2_ranks}"
    runs = {}
    for name, ckpt, extra in [("hub", hub, []), ("run-ema", run, []), ("run-raw", run, ["--no-ema"])]:
        out = tmp_path / f"{name}.jsonl"
        r = _door("sample.py", "--checkpoint", ckpt, "--tokenizer", tok, "--steps", "4",
                  "--num-samples", "2", "--length", "24", "--device", "cpu", "--out", str(out),
                  "--infill", "The [____:4] of the [___] .", *extra)
        assert r.returncode == 0, r.stderr
        runs[name] = [json.loads(line)["tokens"] for line in out.read_text().splitlines()]
    assert runs["hub"] == runs["run-ema"]          # the same EMA weights, the same seed
    assert runs["run-raw"] != runs["run-ema"]
    corpus = tmp_path / "text.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog. " * 1000)
    r = _door("evaluate.py", "--checkpoint", run, "--tokenizer", tok, "--data", str(corpus),
              "--timesteps", "2", "--num-sequences", "4", "--batch-size", "4", "--device", "cpu",
              "--cache-dir", str(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr
    assert "likelihood bound:" in r.stdout and "note: noise: log-linear" in r.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(["cache", "text.txt", "hub.jsonl",
                                                   "run-ema.jsonl", "run-raw.jsonl"])


def test_fine_tuning_from_a_paper_checkpoint(paper_gpt2, gpt2_ranks, tmp_path):
    from sedd.config import TrainConfig
    from sedd.training import Trainer
    hub, run, raw, ema = paper_gpt2
    data = tmp_path / "corpus"
    data.mkdir()
    (data / "a.txt").write_text("It was the best of times, it was the worst of times. " * 300)
    data.chmod(0o555)      # a read-only data folder (as root this is advisory: listed below)
    before = sorted(os.listdir(data))
    common = dict(data=str(data), tokenizer=f"gpt2:{gpt2_ranks}", steps=2, batch_size=2,
                  seq_len=16, out=str(tmp_path / "ft"), progress=False, final_report=False,
                  eval_every=1000, save_every=1000, sample_every=1000, device="cpu",
                  cache_dir=str(tmp_path / "cache"))
    cfg = TrainConfig.from_preset("tiny", init_from=run, **common)
    assert (cfg.hidden_size, cfg.n_blocks, cfg.n_heads, cfg.cond_dim) == (H, BLOCKS, HEADS, C)
    assert cfg.graph == "absorb" and cfg.noise == "loglinear" and cfg.dropout == 0.1
    t = Trainer(cfg)
    assert isinstance(t.noise, LogLinear) and t.noise.eps == 1e-3 and t.graph.V == 50258
    for k, v in ema.items():           # EMA weights of the run, in the model and in its EMA
        assert torch.equal(t.model.state_dict()[k], v) and torch.equal(t.ema_model.state_dict()[k], v)
    t.fit()
    assert sorted(os.listdir(data)) == before        # nothing written beside the data
    assert any(f.startswith("tokens-") for f in os.listdir(tmp_path / "cache"))
    moved = max((t.model.state_dict()[k] - v).abs().max().item() for k, v in ema.items())
    assert 0 < moved < 0.1
    # the run's own checkpoint loads back with the checkpoint's graph and noise
    p = load(str(tmp_path / "ft"), tokenizer=False)
    assert p.run.graph == "absorb" and p.run.noise == {"name": "loglinear", "eps": 1e-3}
    raw_cfg = TrainConfig.from_preset("tiny", init_from=run, init_weights="raw",
                                      **{**common, "out": str(tmp_path / "ft2")})
    t2 = Trainer(raw_cfg)
    assert torch.equal(t2.model.state_dict()["blocks.0.attn_qkv.weight"], raw["blocks.0.attn_qkv.weight"])
    # flags that disagree with the checkpoint
    for flag, value, msg in [("graph", "uniform", "--graph uniform disagrees with the "
                                                  "checkpoint's absorb"),
                             ("hidden_size", 64, "--hidden-size 64 disagrees"),
                             ("parametrisation", "clean", "--parametrisation clean disagrees"),
                             ("seq_len", 64, "--seq-len 64 is longer than the checkpoint's window 32")]:
        with pytest.raises(ValueError, match=msg):
            TrainConfig.from_preset("tiny", init_from=run, **{**common, flag: value})
    with pytest.raises(ValueError, match="has 27 tokens but the checkpoint's vocabulary has 50257"):
        Trainer(TrainConfig.from_preset("tiny", init_from=run, **{**common, "tokenizer": "char"}))
    with pytest.raises(ValueError, match="pass --data"):
        TrainConfig.from_preset("tiny", init_from=run, steps=2)
    data.chmod(0o755)


def test_train_door_init_from(paper_gpt2, gpt2_ranks, tmp_path):
    hub, *_ = paper_gpt2
    corpus = tmp_path / "c.txt"
    corpus.write_text("Call me Ishmael. Some years ago, never mind how long precisely. " * 200)
    r = _door("train.py", "--init-from", hub, "--data", str(corpus), "--tokenizer",
              f"gpt2:{gpt2_ranks}", "--steps", "1", "--batch-size", "2", "--seq-len", "8",
              "--out", str(tmp_path / "o"), "--no-progress", "--no-report", "--device", "cpu",
              "--cache-dir", str(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr
    assert "initialised from" in r.stdout and "paper layout" in r.stdout
    r = _door("train.py", "--init-from", hub, "--data", str(corpus), "--graph", "uniform")
    assert r.returncode == 1 and "--graph uniform disagrees" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------ export
def test_export_to_the_paper_layout_round_trips(tmp_path):
    from huggingface_hub import PyTorchModelHubMixin
    from sedd.training import Trainer
    Trainer(tiny_run_config(tmp_path / "run", steps=3)).fit()
    src = load(str(tmp_path / "run"), tokenizer=False)
    r = _door("export.py", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "paper"))
    assert r.returncode == 0, r.stderr
    cfg = json.load(open(tmp_path / "paper" / "config.json"))
    assert cfg["tokens"] == src.run.n and cfg["graph"]["type"] == "absorb"
    assert cfg["noise"]["type"] == "loglinear" and cfg["model"]["length"] == 24
    back = load(str(tmp_path / "paper"), tokenizer=False)
    a, b = src.model.state_dict(), back.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert back.run.tokenizer == "builtin" and back.run.noise == src.run.noise

    class PaperSEDD(torch.nn.Module, PyTorchModelHubMixin):
        """What the paper's SEDD.__init__(config) reads of config.json, on our DDiT."""
        def __init__(self, config):
            super().__init__()
            absorb = config["graph"]["type"] == "absorb"
            m = config["model"]
            self.net = DDiT(ModelConfig(vocab_size=config["tokens"] + (1 if absorb else 0),
                                        hidden_size=m["hidden_size"], n_blocks=m["n_blocks"],
                                        n_heads=m["n_heads"], cond_dim=m["cond_dim"],
                                        dropout=m["dropout"], scale_by_sigma=m["scale_by_sigma"]))
            # the paper's SEDD holds the DDiT's modules at the top level
            net = self.net
            del self.net
            for name, mod in net.named_children():
                self.add_module(name, mod)

    theirs = PaperSEDD.from_pretrained(str(tmp_path / "paper"), strict=True)
    c = theirs.state_dict()
    assert c.keys() == a.keys() and all(torch.equal(a[k], c[k]) for k in a)
    r = _door("export.py", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "paper"))
    assert r.returncode == 1 and "already holds a config.json" in r.stderr
    # what the paper's code cannot represent is refused
    clean = DDiT(ModelConfig(vocab_size=11, hidden_size=16, n_blocks=1, n_heads=2, cond_dim=8,
                             parametrisation="clean"))
    with pytest.raises(ValueError, match="no time-independent"):
        save_pretrained(str(tmp_path / "c"), clean, {"graph": "absorb", "n": 10}, layout="paper")
    other_eps = DDiT(ModelConfig(vocab_size=11, hidden_size=16, n_blocks=1, n_heads=2, cond_dim=8))
    with pytest.raises(ValueError, match="eps = 0.001 fixed; this model's is 0.01"):
        save_pretrained(str(tmp_path / "e"), other_eps, {"graph": "absorb", "n": 10,
                        "noise": {"name": "loglinear", "eps": 0.01}}, layout="paper")


def test_a_hub_folder_without_weights_is_named(tmp_path):
    folder = write_paper_hub(tmp_path / "h", paper_config(100), random_state(100))
    os.remove(os.path.join(folder, "model.safetensors"))
    with pytest.raises(CheckpointError, match="has a config.json but no weights"):
        read_config(folder)


def test_save_and_load_pretrained_round_trip(run_dir, tmp_path):
    r = load(str(run_dir), tokenizer=False)
    model, cfg = r.model, r.run.to_dict()
    save_pretrained(str(tmp_path / "hub"), model, {"graph": cfg["graph"], "n": cfg["n"]})
    r2 = load(str(tmp_path / "hub"), tokenizer=False)
    again, cfg2 = r2.model, r2.run.to_dict()
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert cfg2["model"] == model.config.to_dict()


def paper_small_layout(V=50258, H=768, N=12, C=128):
    """Names and shapes of the paper's released SEDD-small state dict."""
    spec = {"vocab_embed.embedding": (V, H), "sigma_map.mlp.0.weight": (C, 256),
            "sigma_map.mlp.0.bias": (C,), "sigma_map.mlp.2.weight": (C, C),
            "sigma_map.mlp.2.bias": (C,), "rotary_emb.inv_freq": (H // 12 // 2,)}
    for i in range(N):
        b = f"blocks.{i}."
        spec.update({b + "norm1.weight": (H,), b + "attn_qkv.weight": (3 * H, H),
                     b + "attn_out.weight": (H, H), b + "norm2.weight": (H,),
                     b + "mlp.0.weight": (4 * H, H), b + "mlp.0.bias": (4 * H,),
                     b + "mlp.2.weight": (H, 4 * H), b + "mlp.2.bias": (H,),
                     b + "adaLN_modulation.weight": (6 * H, C), b + "adaLN_modulation.bias": (6 * H,)})
    spec.update({"output_layer.norm_final.weight": (H,), "output_layer.linear.weight": (V, H),
                 "output_layer.linear.bias": (V,), "output_layer.adaLN_modulation.weight": (2 * H, C),
                 "output_layer.adaLN_modulation.bias": (2 * H,)})
    return spec


def test_paper_checkpoint_layout_loads_strictly():
    spec = paper_small_layout()
    state = {k: torch.randn(s) * 0.01 for k, s in spec.items()}
    model = DDiT(ModelConfig(vocab_size=50258, **model_preset("small")))
    model.load_state_dict(state, strict=True)
    assert 85e6 < model.num_parameters() < 95e6


def test_corrupt_or_missing_checkpoints(tmp_path):
    Trainer(small_cfg(tmp_path / "run", steps=2)).fit()
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(str(tmp_path / "run"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(small_cfg(tmp_path / "empty", resume=True))
    # a failed resume never touched the last good pointer
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step-00000002"
