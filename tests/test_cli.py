"""The command line against the stage configs: the same names, defaults and choices.

A stage's flags are a front end over its config class. A flag that sets a config field must
be named after it (``--batch-size`` for ``batch_size``, or an alias listed here), must
default to ``None`` (the config's default applies) or to the config's own default (the
command line and the library give the same answer to the same question), and must list every allowed value of a field
whose type is a fixed set of choices. Flags that are not config fields must be listed as
front-end options, so that a new flag cannot drift from the config unnoticed.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

import pytest
from pydantic import BaseModel
from typer.main import get_command

from medsae.cli import app
from medsae.data.config import PhantomConfig, PrepareConfig, SplitConfig
from medsae.encode.config import EncodeConfig
from medsae.encode.imported import ImportConfig
from medsae.evaluate.config import EvaluateConfig, RankConfig
from medsae.interpret.config import InterpretConfig, LLMConfig
from medsae.report import ReportConfig
from medsae.retrieval.config import AskConfig, IndexConfig, SearchConfig
from medsae.retrieval.index import search_similar
from medsae.sae.config import CodesConfig, TrainConfig

# command -> the config classes its flags set (nested ones included)
CONFIGS: dict[str, tuple[type[BaseModel], ...]] = {
    "phantom": (PhantomConfig,),
    "prepare": (PrepareConfig,),
    "split": (SplitConfig,),
    "encode": (EncodeConfig,),
    "train": (TrainConfig,),
    "codes": (CodesConfig,),
    "evaluate": (EvaluateConfig,),
    "rank": (RankConfig,),
    "interpret": (InterpretConfig, LLMConfig),
    "index": (IndexConfig, SearchConfig),
    "search": (SearchConfig,),
    "ask": (AskConfig,),
    "report": (ReportConfig,),
    "import-embeddings": (ImportConfig,),
}
# (command, flag parameter) -> the config field it sets under another name
ALIASES: dict[tuple[str, str], str] = {
    ("phantom", "size"): "size_xy",
    ("phantom", "slices"): "n_slices",
    ("index", "queries"): "eval_queries",
}
# parameters that are not config fields: what to act on, where, and front-end switches
FRONT_END = {
    "workspace",
    "config",
    "config_file",
    "force",
    "encoder",
    "run",
    "out",
    "source",
    "subjects",
    "restrict",
    "allow_failures",
    "option",
    "text_only",
    "slice_id",
    "image",
    "plane",
    "index",
    "filter_",
    "query",
    "metadata",
    "images",
}
# (command, flag parameter) -> the library function whose parameter of that name the flag
# sets (a search's result count is a call's argument, not the index stage's setting)
FUNCTION_PARAMETERS: dict[tuple[str, str], Any] = {("search", "n"): search_similar}
COMMANDS_WITHOUT_CONFIG = {"encoders", "fake-llm-server", "serve", "run", "demo"}


def _fields(command: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for cls in reversed(CONFIGS[command]):
        fields.update(cls.model_fields)
    return fields


def _choices(annotation: Any) -> list[str]:
    """The allowed values of a field typed as a Literal (or an optional one)."""
    if typing.get_origin(annotation) is typing.Literal:
        return [str(v) for v in typing.get_args(annotation)]
    out: list[str] = []
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is typing.Literal:
            out += [str(v) for v in typing.get_args(arg)]
    return out


def _options(command: str) -> list[Any]:
    sub = get_command(app).commands[command]  # type: ignore[attr-defined]
    return [p for p in sub.params if getattr(p, "param_type_name", "") == "option"]


def test_every_command_is_checked() -> None:
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    assert commands == set(CONFIGS) | COMMANDS_WITHOUT_CONFIG


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_flags_follow_the_config(command: str) -> None:
    fields = _fields(command)
    problems: list[str] = []
    for opt in _options(command):
        function = FUNCTION_PARAMETERS.get((command, opt.name))
        if function is not None:
            default = inspect.signature(function).parameters[opt.name].default
            if opt.default not in (None, default):
                problems.append(
                    f"{opt.opts}: defaults to {opt.default!r}, the library to {default!r}"
                )
            continue
        name = ALIASES.get((command, opt.name), opt.name)
        if name not in fields:
            if opt.name not in FRONT_END:
                problems.append(f"{opt.opts}: not a field of {CONFIGS[command]}")
            continue
        field = fields[name]
        if (command, opt.name) not in ALIASES:
            flag = "--" + name.replace("_", "-")
            if flag not in opt.opts:
                problems.append(f"{opt.opts}: expected the flag {flag}")
        if opt.default is not None and opt.default != field.default:
            problems.append(
                f"{opt.opts}: defaults to {opt.default!r}, the config to {field.default!r}"
            )
        missing = [c for c in _choices(field.annotation) if c not in (opt.help or "")]
        if missing:
            problems.append(f"{opt.opts}: help does not list {missing}")
    assert not problems, f"medsae {command}:\n" + "\n".join(problems)
