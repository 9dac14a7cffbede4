"""A store URL of a scheme crux_gen has no store for (``mysql://``) is refused,
naming the schemes it takes, wherever a store is named: ``store=`` and ``--db``.
It is never taken for a SQLite file's path (no file or folder is made), and a
password in it is never printed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from crux_gen import FlowContext, InvalidValueError, Registry, Step, flow, get_flow
from crux_gen.cli import cli

BAD = "mysql://app:hunter2@db.internal:3306/app"


def assert_names_the_schemes(message: str, scheme: str = "mysql") -> None:
    assert f"{scheme}://" in message, message
    assert "postgresql://" in message and "postgres://" in message, message
    assert "SQLite" in message, message
    assert "hunter2" not in message, message


def test_store_given_a_mysql_url_names_the_schemes_crux_gen_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    registry = Registry()

    @flow("scheme-demo", registry=registry)
    def demo(ctx: FlowContext):  # type: ignore[no-untyped-def]
        return (yield Step("s", lambda: 1))

    with pytest.raises(InvalidValueError) as info:
        demo.run(store=BAD)  # Flow.run makes a missing SQLite file: not for a URL
    assert_names_the_schemes(str(info.value))
    assert "app:***@db.internal" in str(info.value), str(info.value)
    with pytest.raises(InvalidValueError) as info:
        get_flow("f1", store=BAD)
    assert_names_the_schemes(str(info.value))
    assert os.listdir(tmp_path) == []  # nothing was made for it


def test_a_sqlite_url_says_to_give_the_files_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidValueError) as info:
        get_flow("f1", store=f"sqlite:///{tmp_path}/crux.db")
    assert_names_the_schemes(str(info.value), "sqlite")
    assert "not a sqlite:// URL" in str(info.value)


@pytest.mark.parametrize("command", [["list"], ["show", "abcd1234"], ["ui", "--port", "0"]])
def test_the_cli_names_the_schemes_in_one_line(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(cli, [*command, "--db", BAD])
    assert done.exit_code == 1, done.output
    [line] = done.output.strip().splitlines()
    assert_names_the_schemes(line)
    assert os.listdir(tmp_path) == []


def test_postgres_store_given_another_scheme_names_the_ones_it_takes() -> None:
    postgres = pytest.importorskip("crux_gen.stores.postgres")
    with pytest.raises(InvalidValueError) as info:
        postgres.PostgresStore(BAD)
    message = str(info.value)
    assert "postgresql://" in message and "postgres://" in message, message
    assert "hunter2" not in message, message
