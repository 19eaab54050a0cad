"""`BULLETIN_DB=postgresql://…`: sending, resuming, status, the send lock, `db upgrade/copy`."""

from __future__ import annotations

import json

from bulletin.ledger.store import server_send_lock

SAMPLE = 34  # email recipients in the packaged contacts/coordinators.csv


def counts(cli) -> dict[str, int]:
    return json.loads(cli("status", "--json").stdout)["sends"][0]["counts"]


def test_a_send_on_postgresql_resumes_and_reports_like_sqlite(
    workdir, cli, postgres_database, monkeypatch
):
    monkeypatch.setenv("BULLETIN_DB", postgres_database)
    result = cli("status", expect=4)
    assert "bulletin db upgrade" in result.stderr and "Traceback" not in result.stderr
    assert "Upgraded" in cli("db", "upgrade").stdout
    assert "up to date" in cli("db", "upgrade").stdout
    assert f"{SAMPLE} written to the outbox" in cli("send", "eu-referendum", "--yes").stdout
    assert counts(cli)["accepted"] == SAMPLE
    assert "Nothing to send" in cli("send", "eu-referendum", "--yes").stdout
    assert len(list((workdir / "outbox").glob("*.eml"))) == SAMPLE
    assert "***" not in cli("status").stdout  # no URL, no password in the table


def test_a_send_waits_for_forget_or_purge_on_postgresql(
    workdir, cli, postgres_database, monkeypatch
):
    monkeypatch.setenv("BULLETIN_DB", postgres_database)
    cli("db", "upgrade")
    with server_send_lock(postgres_database) as got:  # what forget and purge hold
        assert got
        result = cli("send", "eu-referendum", "--yes", expect=4)
        assert "bulletin forget or purge is running against this database" in result.stderr
    cli("send", "eu-referendum", "--yes")  # released with its holder


def test_db_copy_moves_a_sqlite_history_to_postgresql(workdir, cli, postgres_database, monkeypatch):
    cli("send", "eu-referendum", "--yes")
    before = counts(cli)
    result = cli("db", "copy", "bulletin.db", postgres_database)
    assert "Copied" in result.stdout and f"{SAMPLE} deliveries" in result.stdout
    refused = cli("db", "copy", "bulletin.db", postgres_database, expect=1)
    assert "--force" in refused.stderr
    cli("db", "copy", "bulletin.db", postgres_database, "--force")
    monkeypatch.setenv("BULLETIN_DB", postgres_database)
    assert counts(cli) == before
    assert "Nothing to send" in cli("send", "eu-referendum", "--yes").stdout
    missing = cli("db", "copy", "nowhere.db", postgres_database, expect=1)
    assert "no such tracking database" in missing.stderr and not (workdir / "nowhere.db").exists()
