"""End to end through each transport: the example letter to the sample contacts."""

from email import message_from_bytes, policy


def test_outbox_send_writes_one_eml_per_recipient(workdir, cli):
    result = cli("send", "eu-referendum", "--yes")
    assert "34 written to the outbox" in result.stdout
    files = sorted((workdir / "outbox").glob("*.eml"))
    assert len(files) == 34
    mail = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert (workdir / "bulletin.db").stat().st_mode & 0o777 == 0o600


def test_sendgrid_send_reaches_the_stand_in_once_each(workdir, cli, sendgrid_env):
    cli("send", "eu-referendum", "--yes")
    delivered = sendgrid_env.delivered_emails()
    assert len(delivered) == 34 and set(delivered.values()) == {1}
    body = sendgrid_env.accepted[0]["body"]
    personalization = body["personalizations"][0]
    assert set(personalization["custom_args"]) == {"bulletin_send", "bulletin_delivery"}
    assert personalization["headers"]["List-Unsubscribe"].startswith(
        "<https://bulletin.example.org/unsubscribe?t="
    )
    cli("send", "eu-referendum", "--yes")
    assert sendgrid_env.delivered_emails() == delivered


def test_smtp_send_reaches_the_sink_once_each(workdir, cli, smtp_env):
    cli("send", "eu-referendum", "--yes")
    assert len(smtp_env.delivered_emails()) == 34
    mail = smtp_env.parsed()[0]
    assert mail.get_content_type() == "multipart/alternative"
    assert "Dear" in mail.get_body(("plain",)).get_content()
