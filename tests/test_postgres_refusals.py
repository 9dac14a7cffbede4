"""A PostgreSQL URL the server turns away fails at once with the server's own words.

No such database, no such user, a wrong password: the constructor's first
connection is its own (not the pool's, whose retries would hide the reason until
``connect_timeout`` ran out and then say "cannot reach"), so the ``StoreError``
comes at once and quotes the server, naming the URL with its password masked. A
port nobody listens on, or a server that never answers, still says it cannot be
reached. On the session's server of ``tests/pg.py``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from crux_gen import StoreError, get_flow
from crux_gen.cli import cli

from . import pg

#: Far below connect_timeout (10s by default): the error must not wait for it.
AT_ONCE = 5.0


def url_as(server_url: str, *, user: str | None = None, password: str | None = None,
           dbname: str | None = None) -> str:  # fmt: skip
    """*server_url* as a ``postgresql://`` URL with *user*, *password* or *dbname*
    replaced (a unix socket's folder goes in the query, as pgserver's URL has it)."""
    info = pg.psycopg().conninfo.conninfo_to_dict(server_url)
    user = user if user is not None else str(info.get("user") or "postgres")
    password = password if password is not None else str(info.get("password") or "")
    dbname = dbname if dbname is not None else str(info.get("dbname") or "postgres")
    host = str(info.get("host") or "")
    port = str(info.get("port") or "")
    auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    if host.startswith("/"):
        query = f"?host={quote(host)}" + (f"&port={port}" if port else "")
        return f"postgresql://{auth}@/{quote(dbname)}{query}"
    netloc = host + (f":{port}" if port else "")
    return f"postgresql://{auth}@{netloc}/{quote(dbname)}"


def refused(postgres_store_class: Any, url: str) -> tuple[StoreError, float]:
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        postgres_store_class(url)  # connect_timeout left at its 10s
    return info.value, time.monotonic() - started


def test_a_database_that_does_not_exist_is_named_at_once_in_the_servers_words(
    postgres_store_class: Any, pg_server: pg.Server
) -> None:
    missing = f"nope_{secrets.token_hex(4)}"
    error, took = refused(postgres_store_class, url_as(pg_server.url, dbname=missing))
    assert took < AT_ONCE, (took, str(error))
    message = str(error)
    assert f'database "{missing}" does not exist' in message, message
    assert "refused the connection" in message, message
    assert "cannot reach" not in message, message
    assert missing in message.split("(URL ", 1)[1], message  # the URL is named
    assert not type(error.__cause__).__module__.startswith("psycopg_pool"), repr(error.__cause__)


def test_a_user_that_does_not_exist_is_named_at_once_in_the_servers_words(
    postgres_store_class: Any, pg_server: pg.Server
) -> None:
    nobody = f"nobody_{secrets.token_hex(4)}"
    error, took = refused(postgres_store_class, url_as(pg_server.url, user=nobody))
    assert took < AT_ONCE, (took, str(error))
    assert f'role "{nobody}" does not exist' in str(error), str(error)
    assert "cannot reach" not in str(error)


@contextlib.contextmanager
def password_checked_for(server: pg.Server, role: str) -> Iterator[None]:
    """*role* must give its password (scram) on every connection to *server*: lines
    for it go first in the server's pg_hba.conf (the session's server trusts
    everyone), taken out again after."""
    if os.environ.get(pg.URL_ENV, "").strip():
        pytest.skip(f"{pg.URL_ENV} names a server whose pg_hba.conf these tests leave alone")
    [(hba_file,)] = server.execute("SHOW hba_file")
    hba = Path(hba_file)
    before = hba.read_text()
    lines = "".join(
        f"{kind} all {role} {where} scram-sha-256\n".replace("  ", " ")
        for kind, where in (("local", ""), ("host", "127.0.0.1/32"), ("host", "::1/128"))
    )
    hba.write_text(lines + before)
    try:
        server.execute("SELECT pg_reload_conf()")
        time.sleep(0.2)  # the postmaster reads it on SIGHUP
        yield
    finally:
        hba.write_text(before)
        server.execute("SELECT pg_reload_conf()")


def test_a_wrong_password_is_named_at_once_in_the_servers_words_and_masked(
    postgres_store_class: Any, pg_server: pg.Server, pg_schema: str
) -> None:
    role = f"pw_{secrets.token_hex(4)}"
    pg_server.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'the-right-one'")
    pg_server.execute(f"GRANT CREATE ON DATABASE postgres TO {role}")
    try:
        with password_checked_for(pg_server, role):
            wrong = url_as(pg_server.url, user=role, password="s3cret-wrong", dbname="postgres")
            error, took = refused(postgres_store_class, wrong)
            message = str(error)
            assert took < AT_ONCE, (took, message)
            assert f'password authentication failed for user "{role}"' in message, message
            assert "s3cret-wrong" not in message, message
            assert f"{role}:***@" in message, message
            # The right password on the same lines opens the store.
            right = url_as(pg_server.url, user=role, password="the-right-one", dbname="postgres")
            store = postgres_store_class(right, schema=pg_schema)
            store.start("f1", "demo", "null", "me", 1.0)
            assert store.load("f1").status == "running"
            store.close()
    finally:
        pg_server.execute(f"DROP OWNED BY {role} CASCADE")
        pg_server.execute(f"DROP ROLE {role}")


def test_the_cli_says_the_servers_words_in_one_line(pg_server: pg.Server) -> None:
    pg.store_class()
    missing = f"nope_{secrets.token_hex(4)}"
    url = url_as(pg_server.url, dbname=missing)
    started = time.monotonic()
    done = CliRunner().invoke(cli, ["list", "--db", url])
    assert time.monotonic() - started < AT_ONCE
    assert done.exit_code == 1, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1, done.output
    assert f'database "{missing}" does not exist' in lines[0], lines[0]
    assert "Traceback" not in done.output


def test_get_flow_on_a_refused_url_raises_the_same(pg_server: pg.Server) -> None:
    pg.store_class()
    missing = f"nope_{secrets.token_hex(4)}"
    with pytest.raises(StoreError, match=f'database "{missing}" does not exist'):
        get_flow("f1", store=url_as(pg_server.url, dbname=missing))


# -- a server that cannot be reached is still that ------------------------------------


def test_a_port_nobody_listens_on_says_it_cannot_reach_the_server(
    postgres_store_class: Any,
) -> None:
    port = pg.free_port()
    url = f"postgresql://crux:hunter2@127.0.0.1:{port}/crux"
    started = time.monotonic()
    with pytest.raises(StoreError) as info:
        postgres_store_class(url)
    message = str(info.value)
    assert time.monotonic() - started < AT_ONCE, message
    assert f"cannot reach the PostgreSQL server at 127.0.0.1:{port}/crux" in message, message
    assert "Connection refused" in message, message
    assert "hunter2" not in message and "crux:***@" in message, message


@pytest.mark.slow
def test_a_server_that_never_answers_is_unreachable_after_connect_timeout(
    postgres_store_class: Any,
) -> None:
    # A listener that takes the TCP connection (the kernel's backlog) and never says
    # a word: libpq waits for connect_timeout (2 seconds at least), then gives up.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(StoreError) as info:
            postgres_store_class(f"postgresql://crux@127.0.0.1:{port}/crux", connect_timeout="1s")
        took = time.monotonic() - started
    message = str(info.value)
    assert 0.9 < took < 10, (took, message)
    assert f"cannot reach the PostgreSQL server at 127.0.0.1:{port}/crux" in message, message
