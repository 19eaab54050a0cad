"""`/feedback`: the page a "Was this useful?" link opens (issue 18).

- `GET /feedback?t=TOKEN&a=ANSWER`: the three answers with ANSWER chosen, and a comment box.
  Changes nothing, so a link scanner that follows every link in an email records nothing.
- `POST /feedback?t=TOKEN` (the page's button), fields `answer` and `comment`: records the
  answer, replacing this delivery's earlier one, and thanks the reader.

A token names one delivery (send + recipient) and is signed with BULLETIN_SECRET for the
purpose "feedback" (bulletin/feedback.py). A bad token is a 400 page; without a secret, 503.
Comments are capped at MAX_COMMENT characters, stored as typed and escaped on every page.
Neither tokens nor comments reach the log.
"""

from __future__ import annotations

from contextlib import suppress
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.routing import Route

from bulletin.errors import BulletinError
from bulletin.feedback import (
    ANSWERS,
    DEFAULT,
    MAX_COMMENT,
    Question,
    clean_comment,
    parse_token,
)
from bulletin.feedback import verify_token as verify_feedback_token
from bulletin.ledger.feedback import FeedbackStore

MAX_FORM = 64 * 1024  # a 2,000-character comment is at most ~24 kB urlencoded


class FeedbackPages:
    """The work behind /feedback, done in a thread with the webhook's tracker and lock."""

    def __init__(self, webhook) -> None:
        self.webhook = webhook
        self._templates = None
        self._questions: dict[int, Question] = {}

    def question(self, send) -> Question:
        """The wording the send's emails used: its message file's, while the file is unchanged
        since the send; otherwise the default wording."""
        if send.id not in self._questions:
            from bulletin.message import load_message

            found = DEFAULT
            workdir = self.webhook.settings.workdir
            with suppress(BulletinError, OSError):
                message, _problems = load_message(workdir / send.path, workdir)
                if message and message.content_hash == send.content_hash and message.feedback:
                    found = message.feedback
            self._questions[send.id] = found
        return self._questions[send.id]

    def _delivery(self, token: str):
        """(delivery row, send row) for a well-signed token, or None."""
        from bulletin.web.webhook import Unavailable

        webhook = self.webhook
        secret = webhook.settings.secret
        if not secret:
            raise Unavailable("BULLETIN_SECRET is not set: feedback links cannot be checked")
        parsed = parse_token(token)
        if parsed is None:
            return None
        send_id, delivery_id = parsed
        with webhook.lock:
            webhook._check_open()
            row = webhook.tracker.get_delivery(delivery_id)
            send = webhook.tracker.get_send(send_id) if row is not None else None
        if row is None or send is None or row["send_id"] != send_id:
            return None
        return (row, send) if verify_feedback_token(secret, token, row["email"]) else None

    def show(self, token: str, answer: str) -> tuple[int, str, str]:
        """The page for a link: nothing is recorded."""
        found = self._delivery(token)
        if found is None:
            return 400, self.page(state="invalid"), "bad feedback token"
        row, send = found
        with self.webhook.lock:
            self.webhook._check_open()
            earlier = FeedbackStore(self.webhook.tracker).answer_of(row["id"])
        chosen = answer if answer in ANSWERS else (earlier.answer if earlier else "")
        return (
            200,
            self.page(
                state="ask",
                token=token,
                send=send,
                chosen=chosen,
                comment=earlier.comment if earlier else "",
                earlier=self.question(send).label(earlier.answer) if earlier else "",
            ),
            "",
        )

    def submit(self, token: str, fields: dict[str, str]) -> tuple[int, str, str]:
        found = self._delivery(token)
        if found is None:
            return 400, self.page(state="invalid"), "bad feedback token"
        row, send = found
        answer = fields.get("answer", "")
        comment = clean_comment(fields.get("comment", ""))
        error = ""
        if answer not in ANSWERS:
            error = "Choose one of the three answers, then press “Send my answer”."
        elif len(comment) > MAX_COMMENT:
            error = (
                f"Your comment is {len(comment):,} characters long; please shorten it to "
                f"{MAX_COMMENT:,} or fewer."
            )
        if error:
            page = self.page(
                state="ask", token=token, send=send, chosen=answer, comment=comment, error=error
            )
            why = "no answer" if answer not in ANSWERS else "comment too long"
            return 400, page, f"feedback refused: {why}"
        with self.webhook.lock:
            self.webhook._check_open()
            FeedbackStore(self.webhook.tracker).record(send.id, row["id"], answer, comment)
        page = self.page(state="thanks", send=send, chosen=answer, comment=comment)
        return 200, page, f"feedback from delivery {row['id']}: {answer}"

    def page(self, **context: Any) -> str:
        """templates/feedback.html (the working folder's copy first), autoescaped."""
        import jinja2

        from bulletin.render import template_environment, template_problem
        from bulletin.web.webhook import Unavailable

        settings = self.webhook.settings
        if self._templates is None:
            self._templates = template_environment(settings.workdir)
        question = self.question(context["send"]) if context.get("send") else DEFAULT
        values = {
            "question": question.question,
            "state": "",
            "token": "",
            "send": None,
            "chosen": "",
            "comment": "",
            "earlier": "",
            "error": "",
            "answers": [(a, question.label(a)) for a in ANSWERS],
            "max_comment": MAX_COMMENT,
            "sender": " · ".join(s for s in (settings.organisation, settings.unit) if s),
            **context,
        }
        try:
            return self._templates.get_template("feedback.html").render(values)
        except jinja2.TemplateError as error:
            raise Unavailable(str(template_problem(error, settings.workdir))) from None


def form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a urlencoded or multipart form (the first value of each)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "multipart/form-data":
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body
        )
        fields: dict[str, str] = {}
        if message.is_multipart():
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if isinstance(name, str) and name not in fields:
                    payload = part.get_payload(decode=True) or b""
                    fields[name] = payload.decode("utf-8", "replace")
        return fields
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


def routes(webhook) -> list[Route]:
    """The /feedback route, for the app factory in bulletin/web/webhook.py."""
    from bulletin.web.webhook import METHODS, signed_link_page

    pages = FeedbackPages(webhook)

    def show(request: Request, token: str):
        return pages.show(token, request.query_params.get("a") or "")

    def submit(request: Request, token: str, body: bytes):
        fields = form_fields(request.headers.get("content-type", ""), body)
        return pages.submit(token or fields.get("t", "").strip(), fields)

    feedback = signed_link_page(webhook, MAX_FORM, show, submit)
    return [Route("/feedback", feedback, methods=METHODS)]
