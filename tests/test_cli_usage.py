"""A mistyped command line is one line on stderr naming the problem and where to look, exit
code 2 — like every other error (it used to be click's four-line usage block)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def settle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "settle.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["frobnicate"], "No such command 'frobnicate'. (see `settle --help`)"),
        (["export"], "Missing argument 'session'. (see `settle export --help`)"),
        (["analyze", "x.csv", "--bogus"], "No such option: --bogus (see `settle analyze --help`)"),
        (
            ["demo", "--speed", "fast"],
            "Invalid value for '--speed': Input should be a valid number, unable to parse "
            "string as a number (see `settle demo --help`)",
        ),
        # NaN failed the bound check and read as a number out of range.
        (
            ["demo", "--speed", "nan"],
            "Invalid value for '--speed': Input should be a number, got nan "
            "(see `settle demo --help`)",
        ),
        (
            ["demo", "--duration", "nan"],
            "Invalid value for '--duration': Input should be a number, got nan "
            "(see `settle demo --help`)",
        ),
        (
            ["demo", "--speed", "1001"],
            "Invalid value for '--speed': Input should be less than or equal to 1000 "
            "(see `settle demo --help`)",
        ),
        (
            ["demo", "--duration", "0.05"],
            "Invalid value for '--duration': Input should be greater than or equal to 0.1 "
            "(see `settle demo --help`)",
        ),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], line: str, tmp_path: Path) -> None:
    res = settle(*args, "--db", str(tmp_path / "s.db")) if args[0] == "demo" else settle(*args)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [f"settle: error: {line}"]
    assert res.stdout == ""


def test_help_still_prints_help() -> None:
    res = settle("--help")
    assert res.returncode == 0 and "Usage:" in res.stdout and "export" in res.stdout
    res = settle("log")  # a group without a subcommand shows its help
    assert res.returncode == 2 and "import" in res.stderr + res.stdout


def test_device_and_all_help_say_what_each_command_takes() -> None:
    """`mark`, `baseline` and `session stop` explained `--all` with "(session start: every
    connected strap)", and `--device` said "Device id" though a label works too."""
    for command in (["mark"], ["baseline"], ["session", "stop"], ["session", "start"]):
        res = settle(*command, "--help")
        assert res.returncode == 0
        text = " ".join(res.stdout.split())
        assert "Device id, or a label from `settle pair --list`" in text, command
        assert "session start:" not in text, command
        every = (
            "Every connected strap, sent together."
            if command == ["session", "start"]
            else "Every strap with a running session, sent together."
        )
        assert every in text, command


@pytest.mark.parametrize(
    "args",
    [
        ["sessions", "list", "--db", ""],
        ["export", "latest", "--out", ""],
        ["report", "latest", "--out", ""],
        ["trends", "--out", ""],
        ["analyze", "rec.csv", "--beats", ""],
        ["analyze", "rec.csv", "--rolling", ""],
        ["doctor", "--config", ""],
        ["log", "import", "latest", ""],
        ["run", "--replay", ""],
        ["demo", "--replay", ""],
    ],
)
def test_an_empty_path_is_a_usage_error_not_the_working_directory(
    args: list[str], tmp_path: Path
) -> None:
    """`--out ""` wrote the export or report into the working directory, and `--db ""`
    opened it as a store ("cannot open session store: Is a directory"): Path("") is ".".
    An empty path is now a usage error naming the option, and nothing is written."""
    (tmp_path / "rec.csv").write_text("800\n810\n790\n" * 10)
    res = subprocess.run(
        [sys.executable, "-m", "settle.cli", *args],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parents[1]),
             "SETTLE_CONFIG": str(Path(__file__).parents[1] / "configs" / "settle.toml")},
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.splitlines()
    assert "the path is empty" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.csv"]


@pytest.mark.parametrize("where", ["loading", "running"])
def test_ctrl_c_while_the_command_line_loads_is_no_traceback(where: str) -> None:
    """Ctrl-C in the first few tenths of a second of any `settle` command, while typer, rich
    and pydantic were still being imported, printed a 20–36 line traceback ending in
    KeyboardInterrupt (later it exits 130 without a word). The console script now starts
    from a module that imports nothing heavy and says the same from the first instant."""
    interrupt = (
        "import builtins; real = builtins.__import__\n"
        "def imp(name, *a, **k):\n"
        "    if name == 'settle.cli': raise KeyboardInterrupt\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = imp\n"
        if where == "loading"
        else "import settle.cli\n"
        "def boom(*a, **k): raise KeyboardInterrupt\n"
        "settle.cli.app = boom\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", interrupt + "from settle.entry import main\nmain()", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 130, res.stderr
    assert res.stderr == "" and res.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--no-mqtt", "--no-http", "--duration", "1"],
        ["sessions", "list"],
        ["export", "latest", "--out", "x.csv"],
    ],
)
def test_a_session_store_path_of_the_wrong_kind_is_a_usage_error(
    args: list[str], tmp_path: Path
) -> None:
    """`settle demo --db /tmp` (a directory) failed opening the store, exit 1 ("cannot open
    session store: Is a directory"), though docs/operations.md lists a path of the wrong kind
    — the session store's included — as exit 2; so did a device (`/dev/null`) or a path
    through a file. Now each is one line naming --db (or the setting), exit 2, nothing made."""
    env = {**__import__("os").environ, "SETTLE_CONFIG": str(Path(__file__).parents[1] / "configs"
                                                          / "settle.toml")}  # fmt: skip
    (tmp_path / "file").write_text("x")
    cases = [
        (str(tmp_path),
         "a directory, not a session store file (name a file in it, e.g. settle.db)"),
        ("/dev/null", "not a regular file (a device, pipe or socket), not a session store file"),
        (str(tmp_path / "file" / "s.db"), f"{tmp_path / 'file'} is a file, not a directory"),
    ]  # fmt: skip
    for db, words in cases:
        res = subprocess.run(
            [sys.executable, "-m", "settle.cli", *args, "--db", db],
            capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
        )  # fmt: skip
        assert res.returncode == 2, res.stderr
        assert res.stderr.splitlines() == [f"settle: error: --db: {words} (got {db!r})"]
    res = subprocess.run(
        [sys.executable, "-m", "settle.cli", *args],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**env, "SETTLE_STORAGE__DB_PATH": str(tmp_path)},
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"settle: error: config: storage.db_path: {cases[0][1]}")
    assert line.endswith("(from SETTLE_STORAGE__DB_PATH)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_version_says_which_settle_is_installed() -> None:
    """A user upgrading (docs/operations.md) could not see which version was installed:
    `settle --help` offered no --version."""
    from importlib.metadata import version

    res = subprocess.run(
        [sys.executable, "-m", "settle.cli", "--version"], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"settle {version('settle-hrv')}\n"
