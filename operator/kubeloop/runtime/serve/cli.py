"""``python -m kubeloop.runtime serve``: one flag and one environment variable per ServeConfig field.

A field ``max_batch_rows`` is the flag ``--max-batch-rows`` and the variable ``KUBELOOP_MAX_BATCH_ROWS``
(the default when the flag is not given; an empty variable counts as unset). Its type says how a value
is read (``bool``: on/off), its :class:`~.config.Setting` gives the help, the smallest value and older
flag names that still work (``--threads``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .config import SETTING, ServeConfig, Setting
from .lifecycle import run

ENV_PREFIX = "KUBELOOP_"
Field = dataclasses.Field[object]


def on_off(value: str) -> bool:
    if value.lower() in ("1", "true", "on", "yes"):
        return True
    if value.lower() in ("0", "false", "off", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, not {value!r}")


# How a value of each field type is read from a flag or a variable.
PARSERS: dict[type, Callable[[str], object]] = {bool: on_off, int: int, float: float, str: str, Path: Path}


def flag(f: Field) -> str:
    return "--" + f.name.replace("_", "-")


def env_var(f: Field) -> str:
    return ENV_PREFIX + f.name.upper()


def about(f: Field) -> Setting:
    s = f.metadata[SETTING]
    assert isinstance(s, Setting), f"ServeConfig.{f.name} has no Setting in its metadata"
    return s


def required(f: Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def value_parser(annotation: object) -> Callable[[str], object]:
    """The parser of a field's type; ``X | None`` is read as ``X``."""
    if isinstance(annotation, types.UnionType):
        (annotation,) = (a for a in typing.get_args(annotation) if a is not types.NoneType)
    assert isinstance(annotation, type) and annotation in PARSERS, f"no parser for {annotation}"
    return PARSERS[annotation]


def shown(value: object) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def fields() -> list[tuple[Field, Callable[[str], object]]]:
    hints = typing.get_type_hints(ServeConfig)
    return [(f, value_parser(hints[f.name])) for f in dataclasses.fields(ServeConfig)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kubeloop.runtime serve",
        description="Serve an ONNX model over the Open Inference Protocol (V2) and V1.",
    )
    for f, parse in fields():
        s = about(f)
        if required(f):
            default = " (required)"
        else:
            default = "" if f.default is None else f" (default {shown(f.default)})"
        p.add_argument(
            flag(f),
            *s.aliases,
            dest=f.name,
            type=parse,
            default=None,  # None: not given; then the variable, then the field's default
            metavar="on|off" if parse is on_off else None,
            help=f"{s.help} [{env_var(f)}]{default}",
        )
    return p


def parse_args(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> ServeConfig:
    p = build_parser()
    given = vars(p.parse_args(argv))
    # The values' types are the fields' own: each one is read by the parser of its field's annotation.
    values: dict[str, Any] = {}
    for f, parse in fields():
        value = given[f.name]
        if value is None and environ.get(env_var(f)):
            raw = environ[env_var(f)]
            try:
                value = parse(raw)
            except (ValueError, argparse.ArgumentTypeError) as e:
                p.error(f"{env_var(f)}={raw!r} is not valid for {flag(f)}: {e}")
        if value is None:
            if required(f):
                p.error(f"{flag(f)} (or {env_var(f)}) is required")
            continue
        minimum = about(f).minimum
        if minimum is not None and isinstance(value, int | float) and value < minimum:
            p.error(f"{flag(f)} must be at least {shown(minimum)}, not {value}")
        values[f.name] = value
    try:
        return ServeConfig(**values)
    except ValueError as e:  # settings that contradict each other
        p.error(str(e))


def main(argv: list[str] | None = None) -> int:
    """Exit 0 after a clean drain, 2 when the model cannot be served (reason in the termination log)."""
    return run(parse_args(argv))
