"""The command line against the stage configs: flags made from the fields, one convention.

Every stage command's settings are generated from its config class (medsae.cli_config):
each field with a flag type has ``--field-name`` defaulting to "not given", whose help
shows the config's own default and every allowed value; ``--config FILE`` and ``--set``
work the same way everywhere. Flags that are not config fields are the front end's own and
are listed here, so that a new hand-written flag cannot drift from the config unnoticed.
"""

from __future__ import annotations

import inspect
import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import typer
from pydantic import Field
from typer.main import get_command
from typer.testing import CliRunner

from medsae.cli import app
from medsae.cli_config import _default_text, config_command, config_flags, iter_config_commands
from medsae.config import StageConfig
from medsae.retrieval.config import AskConfig, SearchConfig
from medsae.retrieval.index import search_similar

# command -> its hand-written parameters (what to act on, where, front-end switches)
FRONT_END: dict[str, set[str]] = {
    "phantom": {"out", "subjects"},
    "prepare": {"root", "workspace", "allow_failures", "force"},
    "split": {"workspace", "force"},
    "encode": {"workspace", "option", "force"},
    "train": {"workspace", "encoder", "force"},
    "codes": {"workspace", "encoder", "run", "force"},
    "evaluate": {"workspace", "encoder", "run", "force"},
    "rank": {"workspace", "force"},
    "interpret": {"workspace", "encoder", "run", "top_n", "text_only", "force"},
    "index": {"workspace", "encoder", "run", "force"},
    "report": {"workspace", "force"},
    "import-embeddings": {"file", "workspace", "metadata", "images", "force"},
}
COMMON = {"config_file", "set_values"}
# commands that are front ends over a library call rather than a stage config
HAND_WRITTEN = {
    "encoders",
    "fake-llm-server",
    "serve",
    "run",
    "demo",
    "search",
    "ask",
    "runs",
    "slices",
    "export",
}
# documented flags that must keep working: command -> arguments
DOCUMENTED = {
    "phantom": ["OUT", "--subjects", "24", "--size", "64", "--slices", "80", "--seed", "0"],
    "prepare": ["--single-window", "--all-slices", "-j", "2", "--label-maps", "--planes", "axial"],
    "encode": ["-e", "efficientnet-lite0", "-o", "input_size=128", "--batch-size", "8"],
    "train": ["-e", "x", "--arch", "matryoshka,topk", "--levels", "128,512;64,256", "--k", "5,10"],
    "evaluate": ["--parts", "reconstruction,probes", "--max-train", "100", "--seed", "1"],
    "interpret": ["--base-url", "http://x/v1", "--model", "m", "--top-n", "5", "--text-only"],
    "index": ["--k", "3", "--queries", "40"],
    "report": ["--n-features", "4", "--encoder", "e", "--run", "r"],
}


def _commands() -> dict[str, Any]:
    return dict(iter_config_commands(app))


def _params(command: str) -> dict[str, Any]:
    sub = get_command(app).commands[command]  # type: ignore[attr-defined]
    return {p.name: p for p in sub.params}


def _help(command: str) -> str:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return " ".join(result.output.replace("│", " ").split())


def test_every_command_is_checked() -> None:
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    assert set(_commands()) == set(FRONT_END)
    assert commands == set(FRONT_END) | HAND_WRITTEN


@pytest.mark.parametrize("command", sorted(FRONT_END))
def test_every_flag_is_a_field_or_listed(command: str) -> None:
    fn = _commands()[command]
    generated = {f.param: f for f in fn.config_flags}
    params = _params(command)
    extra = set(params) - set(generated) - COMMON - FRONT_END[command]
    assert not extra, f"medsae {command}: flags neither from the config nor listed: {extra}"
    for flag in fn.config_flags:
        param = params.get(flag.param)
        if param is None:  # excluded: a front-end flag sets it (--top-n), or --set does
            continue
        assert param.default is None, f"{param.opts}: a flag must default to 'not given'"
        assert f"--{'-'.join(flag.path).replace('_', '-')}" in param.opts
        assert all(c in (param.help or "") for c in flag.choices), param.help


@pytest.mark.parametrize("command", sorted(FRONT_END))
def test_help_shows_the_config_default_and_the_config_table(command: str) -> None:
    fn = _commands()[command]
    text = _help(command)
    # the table name survives rendering (it was eaten as console markup)
    section = {"import-embeddings": "import"}.get(command, command)
    assert f"[{section}] table" in text
    assert f"{section}.KEY=VALUE" in text
    model = fn.config_model
    for name, info in model.model_fields.items():
        flag = next((f for f in fn.config_flags if f.path == (name,)), None)
        if flag is None or flag.param not in _params(command):
            continue
        assert f"[config: {_default_text(info)}]" in text, (command, name)


def test_every_field_is_reachable() -> None:
    """Fields without a flag (dictionaries, nested lists of configs) are reached by --set."""
    for command, fn in _commands().items():
        model = fn.config_model
        flagged = {f.path[0] for f in config_flags(model)}
        for name, info in model.model_fields.items():
            if name in flagged:
                continue
            kinds = {
                typing.get_origin(a) for a in (info.annotation, *typing.get_args(info.annotation))
            }
            assert dict in kinds, (command, name)


@pytest.mark.parametrize("command", sorted(DOCUMENTED))
def test_documented_flags_still_parse(command: str) -> None:
    sub = get_command(app).commands[command]  # type: ignore[attr-defined]
    ctx = sub.make_context(
        command, ["-w", "ws", *DOCUMENTED[command]] if command != "phantom" else DOCUMENTED[command]
    )
    assert ctx.params


def test_distinct_default_ports() -> None:
    serve = _params("serve")["port"].default
    fake = _params("fake-llm-server")["port"].default
    assert serve != fake


def test_ask_features_help_says_what_is_composed() -> None:
    text = _help("ask")
    assert "2m" in text and "backfill" in text


# ------------------------------------------------------------------ the generator itself
class Inner(StageConfig):
    model: str | None = Field(default=None, description="A model.")
    retries: int = Field(default=2, description="Retries.")


class Wide(StageConfig):
    arch: Literal["wide"] = "wide"
    width: int = Field(default=8, description="Width.")


class Deep(StageConfig):
    arch: Literal["deep"] = "deep"
    depth: int = Field(default=3, description="Depth.")


class Toy(StageConfig):
    source: str | None = Field(default=None, json_schema_extra={"path": True}, description="S.")
    size: int = Field(default=224, description="Size.")
    planes: list[Literal["axial", "coronal"]] = Field(default_factory=lambda: ["axial"])
    levels: list[list[int]] = Field(default_factory=lambda: [[1, 2]])
    fast: bool = Field(default=True, description="Fast.")
    table: dict[str, str] = Field(default_factory=dict)
    inner: Inner = Field(default_factory=Inner)
    net: Annotated[Wide | Deep, Field(discriminator="arch")] = Field(default_factory=Wide)


def _toy_app() -> tuple[typer.Typer, list[Any]]:
    seen: list[Any] = []
    toy = typer.Typer()

    @config_command(toy, "toy", Toy, aliases={"inner_model": ["--model"]})
    def toy_cmd(
        workspace: Path | None = typer.Option(None, "--workspace"), config: Any = None
    ) -> None:
        seen.append((workspace, config))

    @toy.command("other")
    def other() -> None:  # a second command, so that "toy" is a subcommand
        pass

    return toy, seen


def test_generated_flags_types_and_precedence(tmp_path: Path) -> None:
    toy, seen = _toy_app()
    flags = {f.param: f for f in config_flags(Toy)}
    assert {"inner_model", "inner_retries", "net_arch", "net_width", "net_depth"} <= set(flags)
    assert "table" not in flags
    assert "(deep only)" in flags["net_depth"].help
    cfg = tmp_path / "sub" / "c.toml"
    cfg.parent.mkdir()
    cfg.write_text('workspace = "ws"\n[toy]\nsource = "data"\nsize = 64\nfast = false\n')
    args = ["toy", "--config", str(cfg), "--set", "toy.size=32", "--set", "toy.table.a=b"]
    args += ["--planes", "axial,coronal", "--levels", "1,2;3,4", "--model", "m"]
    args += ["--net-arch", "deep", "--net-depth", "5"]
    result = CliRunner().invoke(toy, args)
    assert result.exit_code == 0, result.output
    ws, c = seen[-1]
    assert ws == (cfg.parent / "ws").resolve()  # relative to the file, not the cwd
    assert c.source == str((cfg.parent / "data").resolve())
    assert c.size == 32 and c.fast is False and c.table == {"a": "b"}
    assert c.planes == ["axial", "coronal"] and c.levels == [[1, 2], [3, 4]]
    assert c.inner.model == "m" and c.inner.retries == 2
    assert isinstance(c.net, Deep) and c.net.depth == 5
    # a flag wins over --set
    result = CliRunner().invoke(
        toy, ["toy", "--workspace", "w", "--set", "toy.size=32", "--size", "16"]
    )
    assert result.exit_code == 0 and seen[-1][1].size == 16
    # a bad choice is refused naming the allowed values
    result = CliRunner().invoke(toy, ["toy", "--workspace", "w", "--planes", "sagittal"])
    assert result.exit_code != 0 and "axial" in result.output
    # --set of another table is refused naming the expected one
    result = CliRunner().invoke(toy, ["toy", "--workspace", "w", "--set", "other.size=3"])
    assert result.exit_code != 0
    assert "toy.KEY=VALUE" in str(result.exception)


def test_same_config_from_flags_file_and_set(tmp_path: Path) -> None:
    """The three ways of giving a setting build the same config."""
    toy, seen = _toy_app()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("size: 48\nplanes: [coronal]\n")  # a one-stage file: read whole
    for args in (
        ["toy", "--size", "48", "--planes", "coronal"],
        ["toy", "--config", str(cfg)],
        ["toy", "--set", "toy.size=48", "--set", "toy.planes=[coronal]"],
    ):
        result = CliRunner().invoke(toy, [*args, "--workspace", "w"])
        assert result.exit_code == 0, result.output
    configs = [c.model_dump() for _, c in seen]
    assert configs[0] == configs[1] == configs[2]


def test_stage_command_reads_workspace_and_section_from_a_pipeline_file(tmp_path: Path) -> None:
    """`medsae split --config` reads the [split] table and the file's workspace."""
    from tests.support.synthetic import make_synthetic_workspace

    ws, _ = make_synthetic_workspace(tmp_path / "ws", n_subjects=6, slices_per_plane=2)
    cfg = tmp_path / "pipe.toml"
    cfg.write_text('workspace = "ws"\n[split]\nval_fraction = 0.5\n[prepare]\nstep = 2\n')
    result = CliRunner().invoke(app, ["split", "--config", str(cfg), "--set", "split.seed=3"])
    assert result.exit_code == 0, result.output
    import json

    manifest = json.loads((ws.split / "manifest.json").read_text())
    assert manifest["config"]["val_fraction"] == 0.5 and manifest["config"]["seed"] == 3


def test_hand_written_front_ends_follow_their_configs() -> None:
    """search and ask: flags named after AskConfig/SearchConfig fields keep their defaults."""
    for command, cls in (("search", SearchConfig), ("ask", AskConfig)):
        for name, param in _params(command).items():
            if name == "n" and command == "search":
                default = inspect.signature(search_similar).parameters["n"].default
                assert param.default in (None, default)
                continue
            if name in cls.model_fields and param.default is not None:
                assert param.default == cls.model_fields[name].default, (command, name)


def test_help_of_every_command_exits_zero() -> None:
    for command in sorted(set(get_command(app).commands)):  # type: ignore[attr-defined]
        result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (command, result.output)
    assert os.environ.get("COLUMNS") != "0"


def test_a_setting_a_message_names_is_a_flag() -> None:
    """The train warning tells the user to set dead_after_samples: `medsae train` can."""
    assert "--dead-after-samples" in _help("train")
    assert "--batch-size" in _help("train")


def test_encode_keeps_the_recorded_options(tmp_path: Path) -> None:
    from medsae.encode.cli import recorded_options
    from medsae.encode.config import EncodeConfig
    from medsae.workspace import Workspace, write_json_atomic

    ws = Workspace(tmp_path)
    options = {"input_size": 128, "pooling": "multiscale"}
    manifest = {"config": {"encoder": "efficientnet-lite0", "options": options}}
    write_json_atomic(ws.embeddings("efficientnet-lite0") / "manifest.json", manifest)
    assert recorded_options(tmp_path, EncodeConfig()) == options
    assert recorded_options(tmp_path, EncodeConfig(encoder="random")) is None
