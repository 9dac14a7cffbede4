"""A number option given a value out of range, too large for a store, or not a
number: one usage line naming the option and the value, exit code 1, no traceback
(``crux-gen list --limit 99999999999999999999999`` was an ``OverflowError``)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from crux_gen.cli import Count, Seconds, cli, main
from crux_gen.stores.sqlite import SQLiteStore

HUGE = "99999999999999999999999"


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "crux.db"
    SQLiteStore(path).close()
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 0), out, err


@pytest.mark.parametrize(
    ("args", "option", "value"),
    [
        (["list", "--limit", HUGE], "--limit", HUGE),
        (["list", "--limit", "9223372036854775808"], "--limit", "9223372036854775808"),
        (["list", "--limit", "9" * 5000], "--limit", "9" * 30),
        (["list", "--limit", "0"], "--limit", "0"),
        (["list", "--limit", "ten"], "--limit", "'ten'"),
        (["list", "--limit", "1.5"], "--limit", "'1.5'"),
        (["migrate", "--from", "{db}", "--to", "{db}2", "--batch", HUGE], "--batch", HUGE),
        (["worker", "no_such_module", "--concurrency", HUGE], "--concurrency", HUGE),
        (["worker", "no_such_module", "--concurrency", "5000"], "--concurrency", "5000"),
        (["ui", "--port", HUGE], "--port", HUGE),
        (["ui", "--refresh", "nan"], "--refresh", "nan"),
        (["ui", "--refresh", "inf"], "--refresh", "inf"),
    ],
)
def test_a_bad_number_is_one_usage_line_naming_option_and_value(
    capsys: pytest.CaptureFixture[str], db: str, args: list[str], option: str, value: str
) -> None:
    args = [a.format(db=db) for a in args]
    code, out, err = run(capsys, *args, "--db", db) if args[0] != "migrate" else run(capsys, *args)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: Invalid value for")
    assert option in err and value in err
    assert "Traceback" not in err and "OverflowError" not in err
    assert not Path(db + "2").exists()


def test_the_largest_limit_a_store_takes_lists_the_flows(
    capsys: pytest.CaptureFixture[str], db: str
) -> None:
    code, out, err = run(capsys, "list", "--db", db, "--limit", str(2**63 - 1))
    assert (code, err) == (0, "")
    assert out == "no flows yet\n"


def test_every_number_option_of_every_subcommand_is_checked_the_same_way() -> None:
    numeric = (click.types.IntParamType, click.types.FloatParamType)
    found = []
    for command in cli.commands.values():
        for param in command.params:
            if isinstance(param.type, Count | Seconds):
                found.append(f"{command.name} {param.opts[0]}")
            assert not isinstance(param.type, numeric), (command.name, param.opts)
    assert set(found) >= {
        "list --limit",
        "worker --concurrency",
        "migrate --batch",
        "ui --port",
        "ui --refresh",
    }
