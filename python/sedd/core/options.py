"""Config options with their command-line flags: `option(...)` declares a field of the run's
config (sedd.config.TrainConfig) together with its help text, range check and flag; families
declare the options only they read the same way (sedd.families.base.Family.options).

The range checks are argparse types that name the flag when a value is out of range:
`positive_int("--steps")("0")` raises "--steps must be >= 1, got 0". The config validates
values given from Python with the same checks, so a flag and a keyword fail alike."""

from __future__ import annotations

import argparse
from dataclasses import field


def option(help, default=None, check=None, flag=None, choices=None, aliases=()):
    """A config field with its command-line flag: `check` an argparse type factory (below),
    `flag` the flag name when it is not --field-name (e.g. --no-report for a True default),
    `aliases` more flag names for the same field."""
    return field(default=default, metadata=dict(help=help, check=check, flag=flag,
                                                choices=choices, aliases=tuple(aliases)))


def flag_name(f) -> str:
    """The command-line flag of a config field (a dataclasses.Field made by `option`)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _number(kind, what, ok):
    def for_flag(flag):
        def parse(text):
            try:
                v = kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {text!r}") from None
            if v != v or not ok(v):
                raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {text}")
            return v
        parse.__name__ = what
        return parse
    return for_flag


positive_int = _number(int, ">= 1", lambda v: v >= 1)
nonneg_int = _number(int, ">= 0", lambda v: v >= 0)
positive_float = _number(float, "> 0 (finite)", lambda v: 0 < v < float("inf"))
unit_interval = _number(float, "in [0, 1)", lambda v: 0 <= v < 1)
probability = _number(float, "in (0, 1]", lambda v: 0 < v <= 1)
fraction = _number(float, "in [0, 1]", lambda v: 0 <= v <= 1)


class ConfigError(ValueError):
    """A config (a checkpoint's, or the run's) that cannot be used as it is; the message names
    the field."""


def number(value, what, kind=float):
    """A config number; PyYAML reads 1e-4 (no dot) as a string, hydra's loader as a float."""
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if kind is int and out != value and not (isinstance(value, str) and str(out) == value.strip()):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    return out
