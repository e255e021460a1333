"""Command-line options made from a stage's config class: one flag per field.

Every stage command is a front end over one pydantic config. :func:`config_command` turns
the fields of that config into typer options (name, type, default, allowed values and
description all come from the field), adds ``--config FILE`` and ``--set section.key=value``
the same way for every stage, and hands the command body the validated config. Only flags
that are not settings of the stage (what to act on: the workspace, an encoder, a run;
``--force``) are written by hand in the command.

* A field ``batch_size`` is the flag ``--batch-size``; a boolean is ``--x/--no-x``; a list is
  comma-separated (``--planes axial,coronal``), a list of lists separates its lists with
  ``;`` (``--levels "128,512;256,1024"``); a field that is a fixed set of values lists them.
* A field that is itself a config (``interpret``'s ``llm``, ``index``'s ``search``) gives
  prefixed flags (``--llm-model``, ``--search-k``); a field that is one of several configs
  told apart by a discriminator (a pydantic discriminated union) gives the flags of every
  member, each applied under that field.
* Every flag defaults to "not given": the value comes from ``--set``, then from the config
  file, then from the config class, whose default the help shows.
* Dictionaries have no flag; ``--set section.key=value`` reaches them and every other field.
Values of ``--config`` are read relative to the config file (``workspace`` and fields marked
as paths), so a config file means the same wherever the command is started from.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from medsae.config import model_members, strip_optional, unannotated
from medsae.errors import InputError


# ---------------------------------------------------------------------- field -> flag
@dataclass(frozen=True)
class Flag:
    """One generated option: where its value goes in the config and how it is parsed."""

    param: str  # the Python parameter name (unique in the command)
    path: tuple[str, ...]  # keys of the config dict the value is written to
    decls: tuple[str, ...]  # option names, e.g. ("--batch-size",)
    kind: Literal["scalar", "bool", "list", "lists"]
    py_type: Any  # the click/Python type of the raw value
    help: str
    choices: tuple[str, ...] = ()

    def parse(self, raw: Any) -> Any:
        """The value the config receives from the flag's raw text."""
        if self.kind == "list":
            return [v.strip() for v in str(raw).split(",") if v.strip()]
        if self.kind == "lists":
            return [
                [v.strip() for v in part.split(",") if v.strip()]
                for part in str(raw).split(";")
                if part.strip()
            ]
        return raw


def _literal_values(annotation: Any) -> tuple[str, ...]:
    annotation = unannotated(annotation)
    if typing.get_origin(annotation) is Literal:
        return tuple(str(v) for v in typing.get_args(annotation))
    return ()


def _default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, list | tuple) for v in value):
            return ";".join(",".join(str(x) for x in v) for v in value)
        return ",".join(str(v) for v in value) if value else "empty"
    if isinstance(value, BaseModel | dict):
        return "see --set"
    return str(value)


def _field_flag(
    name: str, info: FieldInfo, prefix: tuple[str, ...], users: str = ""
) -> Flag | None:
    """The flag of one field, or None for a field without one (a dict, a nested config)."""
    annotation, _ = strip_optional(unannotated(info.annotation))
    flag_name = "-".join((*prefix, name)).replace("_", "-")
    param = "_".join((*prefix, name)).replace("-", "_")
    origin = typing.get_origin(annotation)
    choices = _literal_values(annotation)
    kind: Literal["scalar", "bool", "list", "lists"] = "scalar"
    py_type: Any = str
    if annotation is bool:
        kind, py_type = "bool", bool
    elif annotation in (int, float, str):
        py_type = annotation
    elif annotation is SecretStr or choices:
        py_type = str
    elif origin in (list, tuple, Sequence):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        inner = unannotated(args[0]) if args else str
        if typing.get_origin(inner) in (list, tuple):
            kind = "lists"
        elif model_members(inner) or typing.get_origin(inner) is dict:
            return None
        else:
            kind = "list"
            choices = _literal_values(inner)
    else:
        return None
    text = " ".join((info.description or name.replace("_", " ")).split())
    if users:
        text += f" ({users} only)"
    if choices:
        text += " One of: " + ", ".join(choices) + "."
    if kind == "list":
        text += " Comma-separated."
    elif kind == "lists":
        text += " Comma-separated, ';' between lists."
    text += f" [config: {_default_text(info)}]"
    decls = (f"--{flag_name}/--no-{flag_name}",) if kind == "bool" else (f"--{flag_name}",)
    return Flag(param, (*prefix, name), decls, kind, py_type, text, choices)


def config_flags(model: Any, prefix: tuple[str, ...] = ()) -> list[Flag]:
    """Every flag of a config class (or a union of them), nested configs prefixed."""
    members = model_members(model)
    flags: dict[str, Flag] = {}
    users: dict[str, list[str]] = {}
    for member in members:
        for name in member.model_fields:
            users.setdefault(name, []).append(_member_name(member))
    for member in members:
        for name, info in member.model_fields.items():
            if name in flags:
                continue
            nested = model_members(info.annotation)
            if nested:
                for f in config_flags(info.annotation, (*prefix, name)):
                    flags.setdefault(f.param, f)
                continue
            shared = len(users[name]) == len(members)
            flag = _field_flag(name, info, prefix, "" if shared else ", ".join(users[name]))
            if flag is not None:
                flags[flag.param] = flag
    return list(flags.values())


def _member_name(member: type[BaseModel]) -> str:
    """How a union member is named in help: its discriminator value, else its class name."""
    for info in member.model_fields.values():
        values = _literal_values(info.annotation)
        if len(values) == 1:
            return values[0]
    return member.__name__


# ---------------------------------------------------------------------- config files
def read_section(
    path: Path | None, section: str, model: Any = None
) -> tuple[dict[str, Any], Path | None]:
    """The ``[section]`` table of a config file and its top-level ``workspace``.

    A file with tables of pipeline stages (a ``medsae run`` config) gives its ``[section]``
    table; a file without any (a one-stage file) is read whole, less ``workspace``. Paths
    are read relative to the file.
    """
    if path is None:
        return {}, None
    from medsae.config import PipelineConfig, read_config_file, resolve_paths

    data = read_config_file(path)
    base = Path(path).expanduser().resolve().parent
    staged = section in data or any(
        isinstance(data.get(s), dict) for s in (*PipelineConfig.model_fields, "phantom")
    )
    part = data.get(section, {}) if staged else {k: v for k, v in data.items() if k != "workspace"}
    if part is None:
        part = {}
    if not isinstance(part, dict):
        raise InputError(path, f"[{section}] must be a table")
    ws = data.get("workspace")
    workspace = (base / Path(str(ws)).expanduser()).resolve() if ws else None
    return (resolve_paths(model, part, base) if model is not None else dict(part)), workspace


def apply_sets(data: dict[str, Any], sets: Sequence[str], section: str) -> dict[str, Any]:
    """``data`` with every ``--set section.key=value`` of this command applied."""
    from medsae.config import merge_overrides, parse_override

    for item in sets:
        parsed = parse_override(item)
        if set(parsed) != {section} or not isinstance(parsed[section], dict):
            raise InputError(
                f"--set {item}",
                f"expected {section}.KEY=VALUE (this command's settings are the [{section}] table)",
            )
        data = merge_overrides(data, parsed[section])
    return data


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {path[-1]: value}
    for key in reversed(path[:-1]):
        out = {key: out}
    return out


# ---------------------------------------------------------------------- the command
def _choice_check(flag: Flag) -> Callable[[Any], Any] | None:
    """A callback refusing a value outside the field's choices (None without choices)."""
    if not flag.choices:
        return None

    def check(value: Any) -> Any:
        given = flag.parse(value) if value is not None else []
        for v in given if isinstance(given, list) else [given]:
            if v not in flag.choices:
                raise typer.BadParameter(f"{v!r} is not one of {', '.join(flag.choices)}")
        return value

    return check


def _option(flag: Flag, extra_decls: Sequence[str]) -> inspect.Parameter:
    decls = list(flag.decls)
    for alias in extra_decls:
        if flag.kind == "bool" and alias.startswith("--") and "/" not in alias:
            decls.append(f"{alias}/--no-{alias[2:]}")
        else:
            decls.append(alias)
    option = typer.Option(
        None,
        *decls,
        help=flag.help,
        callback=_choice_check(flag),
        metavar="[" + "|".join(flag.choices) + "]"
        if flag.choices and flag.kind == "scalar"
        else None,
        show_default=False,
    )
    annotation = bool | None if flag.kind == "bool" else flag.py_type | None
    return inspect.Parameter(
        flag.param, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation
    )


def config_command(
    app: typer.Typer,
    name: str,
    model: Any,
    section: str | None = None,
    *,
    aliases: Mapping[str, Sequence[str]] | None = None,
    exclude: Sequence[str] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a stage command whose settings are the fields of ``model``.

    The decorated function declares only its front-end parameters (typer defaults as usual)
    and a parameter ``config``, which receives the validated config. A parameter named
    ``workspace`` that is not given on the command line is taken from the config file's
    top-level ``workspace``. ``aliases`` maps a field's flag parameter (``size_xy``,
    ``llm_model``) to further option names (``--size``, ``--model``); ``exclude`` names flag
    parameters not to generate (their fields are still reachable with ``--set``).
    """
    section = section or name
    aliases = dict(aliases or {})
    flags = [f for f in config_flags(model) if f.param not in exclude]
    unknown = set(aliases) - {f.param for f in flags}
    if unknown:
        raise ValueError(f"aliases for flags that {name} does not have: {sorted(unknown)}")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        front = [p for p in inspect.signature(fn).parameters.values() if p.name != "config"]
        names = {p.name for p in front}
        clash = names & {f.param for f in flags}
        if clash:
            raise ValueError(f"{name}: front-end parameters shadow config fields: {clash}")
        takes_workspace = "workspace" in names
        common = [
            inspect.Parameter(
                "config_file",
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(
                    None,
                    "--config",
                    help=f"TOML/YAML/JSON file: its [{section}] table (or the whole file when it "
                    "has no stage tables); its top-level `workspace` and paths are read "
                    "relative to the file.",
                ),
                annotation=Path | None,
            ),
            inspect.Parameter(
                "set_values",
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(
                    [],
                    "--set",
                    help=f"Override any setting: {section}.KEY=VALUE (repeatable; VALUE is read "
                    "as YAML; nested keys with dots). Wins over --config, loses to flags.",
                    metavar=f"{section}.KEY=VALUE",
                    show_default=False,
                ),
                annotation=list[str],
            ),
        ]
        generated = [_option(f, aliases.get(f.param, ())) for f in flags]
        params = (
            [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in front] + common + generated
        )

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            from medsae.config import build_config, merge_overrides

            config_file = kwargs.pop("config_file")
            sets = kwargs.pop("set_values") or []
            values: dict[str, Any] = {}
            for f in flags:
                raw = kwargs.pop(f.param)
                if raw is not None:
                    values = merge_overrides(values, _nest(f.path, f.parse(raw)))
            data, ws_file = read_section(config_file, section, model)
            data = merge_overrides(apply_sets(data, sets, section), values)
            source = config_file or "command line"
            if model_members(model) == [model]:
                cfg = build_config(model, data, source)
            else:
                cfg = _validate_union(model, data, source)
            if takes_workspace and kwargs.get("workspace") is None:
                if ws_file is None:
                    raise InputError(
                        "--workspace",
                        "no workspace given (use --workspace WS, or `workspace` in --config)",
                    )
                kwargs["workspace"] = ws_file
            return fn(**kwargs, config=cfg)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # type: ignore[attr-defined]
        command.config_flags = flags  # type: ignore[attr-defined]
        command.config_model = model  # type: ignore[attr-defined]
        app.command(name)(command)
        return command

    return decorate


def _validate_union(model: Any, data: dict[str, Any], source: str | Path) -> Any:
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(model).validate_python(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in e.errors()
        )
        raise InputError(source, f"invalid config: {problems}") from e


def iter_config_commands(app: typer.Typer) -> Iterator[tuple[str, Any]]:
    """``(command name, command function)`` of every command made by :func:`config_command`."""
    for info in app.registered_commands:
        fn = info.callback
        if fn is not None and hasattr(fn, "config_flags"):
            yield info.name or fn.__name__, fn


def escape_help(app: typer.Typer) -> None:
    """Make every option's and argument's help literal text (``[prepare]`` is no markup).

    Help is rendered with rich markup, which would swallow bracketed words such as a config
    table's name; this runs once over the registered commands.
    """
    from rich.markup import escape
    from typer.models import ParameterInfo

    for info in app.registered_commands:
        if info.callback is None:
            continue
        for param in inspect.signature(info.callback).parameters.values():
            default = param.default
            if isinstance(default, ParameterInfo) and default.help:
                default.help = escape(default.help)
