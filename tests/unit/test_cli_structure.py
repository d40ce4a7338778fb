"""The shape of the CLI: commands reach shared state only through the context in ``ctx.obj``,
never through ``appliance.cli`` or another module's private helpers, and every command has help."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from appliance.cli import app

COMMANDS = Path(__file__).resolve().parents[2] / "appliance" / "commands"


def _imports(path: Path) -> list[tuple[ast.ImportFrom | ast.Import, bool]]:
    """Every import in a module, with whether it sits inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nested = {
        id(node)
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(fn)
        if isinstance(node, ast.Import | ast.ImportFrom)
    }
    return [
        (node, id(node) in nested) for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
    ]


@pytest.mark.parametrize("path", sorted(COMMANDS.glob("*.py")), ids=lambda p: p.name)
def test_command_modules_do_not_import_the_cli_or_private_helpers(path: Path) -> None:
    for node, in_function in _imports(path):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        assert "appliance.cli" not in modules, f"{path.name}:{node.lineno} imports appliance.cli"
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("appliance"):
            private = [a.name for a in node.names if a.name.startswith("_")]
            assert not private, f"{path.name}:{node.lineno} imports private {private} from {node.module}"
            # Lazy imports are for heavy dependencies, not to dodge a cycle between commands.
            assert not (in_function and (node.module or "").startswith("appliance.commands")), (
                f"{path.name}:{node.lineno} imports {node.module} inside a function"
            )


def _leaves(group: TyperGroup, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if isinstance(command, TyperGroup):
            out += _leaves(command, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


LEAVES = _leaves(typer.main.get_group(app))


def test_the_cli_has_every_command_of_the_design() -> None:
    wanted = {
        ("serve",), ("ingest",), ("ask",), ("search",), ("doctor",), ("eval",), ("verify",),
        ("usage",), ("config", "show"), ("audit", "verify"), ("audit", "export"), ("audit", "rotate"),
        ("users", "add"), ("groups", "add"), ("keys", "create"), ("quotas", "set"),
    }  # fmt: skip
    assert wanted <= set(LEAVES)


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output, result.output
    command = typer.main.get_group(app)
    for name in path:
        command = command.commands[name]
    assert command.help, f"{' '.join(path)} has no help text"
