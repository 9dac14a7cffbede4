"""``crux-gen migrate`` in subprocesses, SQLite to SQLite and SQLite to PostgreSQL,
and ``--db`` as a ``postgresql://`` URL for the other subcommands.

The flows live in a module written to the test's directory: this process loads it
to make the flows, and ``crux-gen worker`` imports it to carry them on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest

from crux_gen import cancel_flow, resume, signal_flow
from crux_gen.cli import main, shown
from crux_gen.migrate import checksum, walk
from crux_gen.records import StoredFlow
from crux_gen.stores.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[1]

FLOWS = """
from crux_gen import Step, Suspend, flow


def charge(card):
    if card == "broken":
        raise RuntimeError("card declined")
    return {"charged": card}


@flow("cli-migrate-order")
def order(ctx):
    reserved = yield Step("reserve", lambda: {"sku": ctx.input["sku"]})
    approval = yield Suspend("approved", timeout=ctx.input.get("timeout", "1h"))
    receipt = yield Step("charge", lambda: charge(ctx.input.get("card", "visa")))
    return {"reserved": reserved, "approval": approval, "receipt": receipt}
"""

STATUS_LINE = "by status: 1 running, 1 suspended, 1 completed, 1 failed, 1 expired, 1 cancelled"


def crux(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CRUX_DB"}
    environ.update(PYTHONPATH=str(REPO), COLUMNS="200", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "crux_gen", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The error of a failed run: exit code 1, one line on stderr, no traceback."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_migrate_{path.parent.name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unleased(flow: StoredFlow) -> StoredFlow:
    return attrs.evolve(flow, lease_owner=None, lease_expires=None)


def everything(store: Any) -> dict[str, StoredFlow]:
    return {f.id: store.load(f.id) for f in walk(store, 1000)}


class Source:
    """``src.db`` with one flow in every status (a keyed pending signal on the
    suspended one, a crashed runner's flow among the running ones)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "src.db"
        (root / "migflows.py").write_text(FLOWS)
        self.flows = load_module(root / "migflows.py")
        order = self.flows.order
        store = self.store = SQLiteStore(self.db)
        self.ids: dict[str, str] = {}
        self.ids["suspended"] = order.run(input={"sku": "s"}, store=store).flow_id
        signal_flow(self.ids["suspended"], "gift-note", {"text": "hi"}, store=store, key="n-1")
        self.ids["completed"] = order.run(input={"sku": "c"}, store=store).flow_id
        signal_flow(self.ids["completed"], "approved", {"by": "ops"}, store=store, key="a-1")
        assert order.run(resume=self.ids["completed"], store=store).status == "completed"
        self.ids["failed"] = order.run(input={"sku": "f", "card": "broken"}, store=store).flow_id
        signal_flow(self.ids["failed"], "approved", {"by": "ops"}, store=store)
        assert order.run(resume=self.ids["failed"], store=store).status == "failed"
        self.ids["expired"] = order.run(input={"sku": "e", "timeout": "1ms"}, store=store).flow_id
        time.sleep(0.01)
        assert order.run(resume=self.ids["expired"], store=store).status == "expired"
        self.ids["cancelled"] = order.run(input={"sku": "x"}, store=store).flow_id
        assert cancel_flow(self.ids["cancelled"], "customer left", store=store)
        # A runner that crashed an hour ago between two steps: its lease lapsed.
        self.ids["running"] = "crashed-runner-flow"
        store.start(
            "crashed-runner-flow", "cli-migrate-order", '{"sku": "k"}', "dead", time.time() - 3600
        )

    def hold(self, flow_id: str) -> None:
        """A live runner's lease on *flow_id* (30s, by the real clock)."""
        self.store.claim(flow_id, "runner-on-host-7", time.time())

    def let_go(self, flow_id: str) -> None:
        self.store.release(flow_id, "runner-on-host-7")


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Source]:
    s = Source(tmp_path)
    yield s
    s.store.close()


def assert_copied(source: Source, target: Any) -> None:
    """The target holds every source flow as it is, but for the lease."""
    mine = everything(source.store)
    theirs = everything(target)
    assert theirs == {i: unleased(f) for i, f in mine.items()}
    assert {i: checksum(f) for i, f in theirs.items()} == {i: checksum(f) for i, f in mine.items()}


# -- SQLite to SQLite ----------------------------------------------------------------------


def test_migrate_copies_every_flow_and_a_second_run_skips_them_all(source: Source) -> None:
    before = everything(source.store)
    done = crux("migrate", "--from", "src.db", "--to", "dst.db", cwd=source.root)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert (
        lines[0]
        == "migrated 6 flows from src.db to dst.db: 6 copied, 0 already there (same checksum)"
    )
    assert lines[1] == STATUS_LINE
    records = sum(len(f.records) for f in before.values())
    assert lines[2] == (
        f"with {records} records and 3 signals; counts and checksum verified for every flow"
    )
    assert lines[3].startswith("took ") and len(lines) == 4

    target = SQLiteStore(source.root / "dst.db")
    try:
        assert_copied(source, target)
        assert everything(source.store) == before  # the source is only read
        assert before[source.ids["running"]].lease_owner == "dead"

        again = crux("migrate", "--from", "src.db", "--to", "dst.db", cwd=source.root)
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines()[0].endswith(": 0 copied, 6 already there (same checksum)")
        assert STATUS_LINE in again.stdout
        assert_copied(source, target)
    finally:
        target.close()


def test_a_suspended_flow_continues_on_the_target_with_its_signal(source: Source) -> None:
    assert crux("migrate", "--from", "src.db", "--to", "dst.db", cwd=source.root).returncode == 0
    waiting = source.ids["suspended"]
    sent = crux(
        "signal", waiting[:10], "approved", '{"by": "new-host"}', "--db", "dst.db", cwd=source.root
    )
    assert sent.returncode == 0, sent.stderr
    target = SQLiteStore(source.root / "dst.db")
    try:
        done = resume(waiting, store=target, flows=[source.flows.order])
        assert done.status == "completed"
        assert done.value["approval"] == {"by": "new-host"}
        assert done.value["reserved"] == {"sku": "s"}
        states = [(s.name, s.state, s.key) for s in target.load(waiting).signals]
        assert states == [("gift-note", "unused", "n-1"), ("approved", "consumed", None)]
    finally:
        target.close()
    assert source.store.load(waiting).status == "suspended"  # the source is not touched


def test_a_live_lease_on_the_source_refuses_and_copies_nothing(source: Source) -> None:
    source.hold(source.ids["suspended"])
    refused = crux("migrate", "--from", "src.db", "--to", "dst.db", cwd=source.root)
    line = one_line_error(refused)
    assert "1 flow is held by a runner on the source" in line
    assert f"{source.ids['suspended']} (cli-migrate-order, runner runner-on-host-7 until" in line
    assert "stop the workers" in line and "nothing was copied" in line
    assert refused.stdout == ""
    assert not (source.root / "dst.db").exists()  # no empty store left behind

    # Into an existing store: nothing of it changes either.
    existing = SQLiteStore(source.root / "other.db")
    source.flows.order.run(input={"sku": "o"}, store=existing, flow_id="theirs")
    before = everything(existing)
    existing.close()
    one_line_error(crux("migrate", "--from", "src.db", "--to", "other.db", cwd=source.root))
    existing = SQLiteStore(source.root / "other.db")
    try:
        assert everything(existing) == before
    finally:
        existing.close()

    source.let_go(source.ids["suspended"])
    done = crux("migrate", "--from", "src.db", "--to", "dst.db", cwd=source.root)
    assert done.returncode == 0 and "6 copied" in done.stdout


def test_a_flow_in_the_target_with_other_content_is_a_one_line_error_naming_it(
    source: Source,
) -> None:
    target = SQLiteStore(source.root / "dst.db")
    theirs = attrs.evolve(source.store.load(source.ids["failed"]), error=None, status="running")
    target.put_flow(theirs)
    target.close()
    line = one_line_error(crux("migrate", "--from", "src.db", "--to", "dst.db", cwd=source.root))
    assert f"1 flow is in the target already with other content: {source.ids['failed']}" in line
    target = SQLiteStore(source.root / "dst.db")
    try:
        assert target.load(source.ids["failed"]) == theirs  # left as it was
        assert len(everything(target)) == 6  # the others were copied
    finally:
        target.close()


def test_bad_migrate_arguments_are_one_line_errors(source: Source) -> None:
    root = source.root
    (root / "notes.txt").write_text("not a database")
    calls = {
        "same store": ["--from", "src.db", "--to", "./src.db"],
        "no database at 'nope.db'": ["--from", "nope.db", "--to", "dst.db"],
        "Missing option '--to'": ["--from", "src.db"],
        "is not an SQLite database": ["--from", "notes.txt", "--to", "dst.db"],
        "--batch": ["--from", "src.db", "--to", "dst.db", "--batch", "0"],
    }
    for expected, args in calls.items():
        line = one_line_error(crux("migrate", *args, cwd=root))
        assert expected in line, (expected, line)
    assert not (root / "dst.db").exists()


def test_an_empty_source_copies_nothing_and_says_so(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "empty.db").close()
    done = crux("migrate", "--from", "empty.db", "--to", "dst.db", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "empty.db holds no flows: nothing to copy into dst.db"


def test_help_lists_migrate_and_every_db_takes_a_url(tmp_path: Path) -> None:
    top = crux("--help", cwd=tmp_path)
    assert "  migrate " in top.stdout and "postgresql://" in top.stdout
    shown_help = crux("list", "--help", cwd=tmp_path)
    assert "--db PATH|URL" in shown_help.stdout and "postgresql:// URL" in shown_help.stdout
    help_text = crux("migrate", "--help", cwd=tmp_path)
    assert "--from PATH|URL" in help_text.stdout and "--to PATH|URL" in help_text.stdout


# -- --db as a URL without PostgreSQL support ------------------------------------------------


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


@pytest.mark.parametrize("missing", ["crux_gen.stores.postgres", "psycopg"])
def test_a_url_without_postgresql_support_says_what_to_install(
    missing: str,
    source: Source,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # As if stores/postgres.py, or psycopg, were not installed.
    monkeypatch.delitem(sys.modules, "crux_gen.stores.postgres", raising=False)
    monkeypatch.setitem(sys.modules, missing, None)
    url = "postgresql://app:s3cret@db.internal/app"
    for args in (
        ["list", "--db", url],
        ["migrate", "--from", str(source.db), "--to", url],
        ["show", "abc", "--db", "postgres://db.internal/app"],
    ):
        code, out, err = run_main(args, capsys)
        assert code == 1 and out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert "PostgreSQL support needs pip install 'crux-gen[postgres]'" in lines[0]
        assert "s3cret" not in err
    # SQLite files keep working.
    code, out, err = run_main(["list", "--db", str(source.db), "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(out)) == 6


def test_urls_are_shown_without_their_password() -> None:
    assert shown("crux.db") == "crux.db"
    assert shown("postgresql://app@db/app") == "postgresql://app@db/app"
    assert shown("postgresql://app:s3cret@db:5432/app") == "postgresql://app:***@db:5432/app"
    assert shown("postgres://app:p%40ss@db/app?sslmode=require") == (
        "postgres://app:***@db/app?sslmode=require"
    )
    hidden = shown("postgresql://db/app?user=app&password=s3cret&sslmode=require")
    assert "s3cret" not in hidden and "sslmode=require" in hidden and "user=app" in hidden
    assert "s3cret" not in shown("postgresql://app:s3cret@[::1/app")  # malformed


# -- SQLite to PostgreSQL ------------------------------------------------------------------


def test_migrate_from_sqlite_to_postgresql_and_carry_on_there(
    source: Source, postgres_store_class: Any, pg_database: str
) -> None:
    url = pg_database
    # A runner holds a flow: nothing is copied, and the database stays empty.
    source.hold(source.ids["suspended"])
    line = one_line_error(crux("migrate", "--from", "src.db", "--to", url, cwd=source.root))
    assert "1 flow is held by a runner on the source" in line and "nothing was copied" in line
    target = postgres_store_class(url)
    try:
        assert target.list_flows() == []
        source.let_go(source.ids["suspended"])

        done = crux("migrate", "--from", "src.db", "--to", url, cwd=source.root)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == (
            f"migrated 6 flows from src.db to {shown(url)}: 6 copied, 0 already there "
            "(same checksum)"
        )
        assert lines[1] == STATUS_LINE
        assert_copied(source, target)

        again = crux("migrate", "--from", "src.db", "--to", url, cwd=source.root)
        assert again.returncode == 0, again.stderr
        assert ": 0 copied, 6 already there (same checksum)" in again.stdout

        # Every subcommand takes the URL as --db.
        waiting = source.ids["suspended"]
        listed, shown_flow, sent = (
            crux("list", "--json", "--db", url, cwd=source.root),
            crux("show", waiting, "--db", url, cwd=source.root),
            crux("signal", waiting[:10], "approved", '{"by": "pg"}', cwd=source.root,
                 env={"CRUX_DB": url}),
        )  # fmt: skip
        for call in (listed, shown_flow, sent):
            assert call.returncode == 0, call.stderr
        assert {f["id"]: f["status"] for f in json.loads(listed.stdout)} == {
            i: s for s, i in source.ids.items()
        }
        assert "gift-note" in shown_flow.stdout and "n-1" in shown_flow.stdout

        # A worker on PostgreSQL carries the suspended flow on to the end.
        environ = {**os.environ, "PYTHONPATH": str(REPO)}
        environ.pop("CRUX_DB", None)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "crux_gen",
                "worker",
                "migflows",
                "--db",
                url,
                "--poll",
                "100ms",
            ],
            cwd=source.root,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while target.load(waiting).status != "completed":
                assert worker.poll() is None, worker.communicate()
                assert time.monotonic() < deadline, "the worker did not run the flow"
                time.sleep(0.05)
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
        assert worker.returncode == 0, err
        assert f"worker on {shown(url)} (lease 30s) for flows" in err
        finished = target.load(waiting)
        assert json.loads(finished.result or "null")["approval"] == {"by": "pg"}
        assert source.store.load(waiting).status == "suspended"  # the source is not touched

        # And back again, PostgreSQL to SQLite.
        back = crux("migrate", "--from", url, "--to", "back.db", cwd=source.root)
        assert back.returncode == 0, back.stderr
        assert "6 copied" in back.stdout and "2 completed" in back.stdout
        copy = SQLiteStore(source.root / "back.db")
        try:
            assert everything(copy) == {i: unleased(f) for i, f in everything(target).items()}
        finally:
            copy.close()
    finally:
        target.close()


def test_postgresql_flags_that_do_not_apply_are_one_line_errors(
    source: Source, postgres_store_class: Any, pg_database: str
) -> None:
    line = one_line_error(
        crux("worker", "migflows", "--db", pg_database, "--synchronous", "NORMAL", cwd=source.root)
    )
    assert "--synchronous is for a SQLite file" in line
    same = one_line_error(
        crux("migrate", "--from", pg_database, "--to", pg_database, cwd=source.root)
    )
    assert "the same store" in same


def test_a_long_migration_says_how_far_it_got_on_stderr(
    source: Source, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from crux_gen.cli import migrate as commands

    monkeypatch.setattr(commands, "PROGRESS_EVERY", 0.0)
    target = source.root / "dst.db"
    code, out, err = run_main(["migrate", "--from", str(source.db), "--to", str(target)], capsys)
    assert code == 0, err
    assert [line.split(" flows done")[0] for line in err.splitlines()] == [
        f"{n} of 6" for n in range(1, 7)
    ]
    # The summary is folded to the terminal's width, wherever the paths put the
    # breaks: read it with the folds undone.
    assert "6 copied, 0 already there" in " ".join(out.split())
