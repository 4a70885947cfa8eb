"""CLI surface: `--version`, the program name in help (console script vs module), help text on everything."""
import argparse
import importlib.metadata

import pytest

import benchmark
from benchmark import cli


def _exit_code(argv) -> int:
    """``cli.main(argv)``'s exit status, whether it returns it or argparse raises SystemExit."""
    try:
        return cli.main(argv)
    except SystemExit as stop:
        return stop.code


def _parsers(parser: argparse.ArgumentParser, path: str = ""):
    """Every (command path, parser) pair: the top-level parser and each subcommand's, recursively."""
    yield path or "(top)", parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}".strip())


def test_every_command_and_option_has_help():
    parser = cli.make_parser()
    undocumented = []
    commands = set()
    for path, p in _parsers(parser):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                documented = {c.dest for c in action._choices_actions if (c.help or "").strip()}
                undocumented += [f"command `{name}`" for name in action.choices if name not in documented]
                commands |= set(action.choices)
            if action.help == argparse.SUPPRESS:
                continue
            if not (action.help or "").strip():
                undocumented.append(f"{path}: {'/'.join(action.option_strings) or action.dest}")
    assert {"run", "list", "report", "check", "prepare", "speed", "eval"} <= commands
    assert undocumented == []


def test_version(capsys):
    assert _exit_code(["--version"]) == 0
    assert capsys.readouterr().out == f"ltkd-bench {benchmark.__version__}\n"
    assert benchmark.__version__ == importlib.metadata.version("ltkd-bench")  # the installed distribution's


@pytest.mark.parametrize("argv0, prog", [("/usr/local/bin/ltkd-bench", "ltkd-bench"),
                                         ("/src/ltkd-bench/benchmark/__main__.py", "python -m benchmark")])
def test_help_names_the_way_it_was_called(argv0, prog, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", [argv0])
    monkeypatch.setenv("COLUMNS", "300")  # no line wrapping inside the sentences checked below
    assert _exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {prog} [-h]") and f"`{prog} run` with no arguments" in out
    assert _exit_code(["eval", "--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: {prog} eval")
