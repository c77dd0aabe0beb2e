"""sedd.families: the registry and the protocol every family implements, checked on each
registered family alike (the per-family tests: test_families_ar.py, and SEDD's throughout the
sampling, training and exactness tests). A new family module passes these without edits here."""

import pytest
import torch

from sedd.config import resolve_config
from sedd.data.language import builtin_language
from sedd.families import FAMILIES, Family, build_model, family_of, get_family, register
from sedd.loading import RunConfig

LANG = builtin_language()
NAMES = sorted(FAMILIES)


def small(name, **kw):
    return resolve_config("micro", family=name, seq_len=8, batch_size=4, **kw)


def bound(name):
    cfg = small(name)
    family = get_family(name).for_config(cfg, LANG.n)
    model_cfg = cfg.model_config(family.network_vocab_size(LANG.n))
    torch.manual_seed(0)
    model = build_model(model_cfg)
    for p in model.parameters():             # off the zero initialisation
        torch.nn.init.normal_(p, std=0.05)
    return cfg, family, model


def test_the_registry():
    assert {"sedd", "ar"} <= set(FAMILIES)
    assert all(issubclass(f, Family) and f.name == n for n, f in FAMILIES.items())
    with pytest.raises(ValueError, match="family must be one of 'ar', "):
        get_family("rnn")
    with pytest.raises(ValueError, match="already registered"):
        register(type("Again", (Family,), {"name": "ar"}))


@pytest.mark.parametrize("name", NAMES)
def test_the_protocol(name):
    """Loss (one differentiable scalar), eval loss, per-sequence likelihood figure, generation
    under every condition the family claims, and the checkpoint record read back as written."""
    cfg, family, model = bound(name)
    assert model.config.family == name and family_of(model).name == name
    x0 = torch.from_numpy(LANG.sample(4, 8, seed=1))
    gen = torch.Generator().manual_seed(0)
    loss = family.loss(model, x0, gen)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        assert torch.isfinite(family.eval_loss(model, x0, gen))
        nll, prior, stderr = family.nll(model.eval(), x0, gen, 4)
    assert nll.shape == prior.shape == stderr.shape == (4,) and (nll > 0).all()
    if family.exact_likelihood:
        assert (prior == 0).all() and (stderr == 0).all()
    kw = {"steps": 4} if "steps" in family.sample_options else {}
    x = family.generate(model, 3, 8, generator=torch.Generator().manual_seed(1), **kw)
    assert x.shape == (3, 8) and int(x.min()) >= 0 and int(x.max()) < LANG.n
    if "prefix" in family.conditions:
        given = torch.zeros(1, 8, dtype=torch.bool)
        given[0, :3] = True
        tokens = torch.zeros(1, 8, dtype=torch.long)
        tokens[0, :3] = x0[0, :3]
        y = family.generate(model, 3, 8, condition=(tokens, given),
                            generator=torch.Generator().manual_seed(2), **kw)
        assert torch.equal(y[:, :3], x0[:1, :3].expand(3, 3))
    if "infill" not in family.conditions:
        given = torch.ones(1, 8, dtype=torch.bool)
        given[0, 3] = False
        with pytest.raises(ValueError):
            family.generate(model, 2, 8, condition=(x0[:1], given), **kw)
    run = RunConfig(model=model.config, tokenizer="builtin", data="builtin",
                    **{"graph": None, "noise": {}, "n": LANG.n, **family.record()})
    back = RunConfig.from_dict(run.to_dict(), "record")
    assert back.model == model.config and back.graph == run.graph and back.noise == run.noise
    assert type(back.process()) is type(family)


@pytest.mark.parametrize("name", NAMES)
def test_options_are_the_familys_own(name):
    """Each option belongs to one family; giving another family's option is refused."""
    mine = get_family(name)
    for other in FAMILIES.values():
        if other is mine:
            continue
        for k, f in other.options.items():
            if k in mine.options:
                continue
            value = (not f.default) if isinstance(f.default, bool) else \
                (f.metadata["choices"][-1] if f.metadata.get("choices") else "uniform")
            if value == f.default:
                continue
            with pytest.raises(ValueError, match=f"--model {name} has no"):
                small(name, **{k: value})
