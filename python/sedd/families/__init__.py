"""Model families, one module each, registered by name: `sedd` (SEDD: the DDiT trained with score
entropy over a graph and noise schedule) and `ar` (the autoregressive baseline). Every module in
this folder is imported here, so a new family is its module (plus its network in sedd/nn/ if new,
and its tests): nothing else changes. The protocol: sedd.families.base.Family.

Imports: sedd.core, sedd.nn, sedd.sampling (and sedd.data for exact oracles)."""

from __future__ import annotations

import importlib
import pkgutil

from .base import FAMILIES, Family, get_family, register, unwrap


def family_of(model, graph=None, noise=None) -> Family:
    """The family of a network (DDP/FSDP wrappers looked through), bound to graph and noise."""
    return get_family(unwrap(model).config.family).bind(graph, noise)


def build_model(config):
    """The network of a ModelConfig, built by its family."""
    family = get_family(config.family)
    family.check_network(config)
    return family.build_network(config)


for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["FAMILIES", "Family", "build_model", "family_of", "get_family", "register"]
