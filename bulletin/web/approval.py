"""The approval page at /approve?t=TOKEN on `bulletin events serve` (issue 17).

GET shows the bulletin as recipients will see it, its audience and what changed since the last
approved version, and records nothing (mail scanners open links). POST records Approve, or Ask
for changes with a comment, once. A link is refused with a page that says why: not signed by
us (403), for an approver no longer in BULLETIN_APPROVERS (403), expired (410), already used
(410), or for a version that has since been edited (410).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.routing import Route

from bulletin import approval
from bulletin.check import Checked, check_message
from bulletin.config import Settings, load_settings
from bulletin.errors import BulletinError
from bulletin.ledger.approvals import AlreadyDecided, ApprovalEvent, ApprovalStore, Kind
from bulletin.ledger.approvals import Route as Via

MAX_FORM = 16 * 1024
MAX_COMMENT = 2000


@dataclass
class Refused:
    status: int
    title: str
    paragraphs: list[str]
    note: str


@dataclass
class Valid:
    request: ApprovalEvent
    checked: Checked
    settings: Settings
    version: approval.Version
    token: str
    expires: int


class ApprovalPages:
    """The pages, sharing the server's tracker (one connection behind its lock)."""

    def __init__(self, webhook, clock=lambda: datetime.now(UTC)) -> None:
        self.webhook = webhook
        self.clock = clock

    # --- checks (in a thread) ---

    def validate(self, token: str) -> Valid | Refused:
        from bulletin.web.webhook import Unavailable

        settings = load_settings(self.webhook.settings.workdir)  # approvers as they are now
        if not settings.secret:
            raise Unavailable("BULLETIN_SECRET is not set: approval links cannot be checked")
        parsed = approval.parse_token(token)
        invalid = Refused(
            403,
            "This approval link is not valid",
            [
                "The link may have been cut short or changed. Use the link in the most recent "
                "approval email, or ask the sender for a new one."
            ],
            "bad token",
        )
        if parsed is None:
            return invalid
        request_id, expires, _ = parsed
        with self.webhook.lock:
            store = ApprovalStore(self.webhook.tracker)
            request = store.get(request_id)
            decided = store.decision_for(request_id) if request else None
        if request is None or request.kind != Kind.REQUEST:
            return invalid
        if not approval.verify_token(settings.secret, token, request.approver, request.fingerprint):
            return invalid
        name = request.message
        if self.clock().timestamp() > expires:
            return Refused(
                410,
                "This approval link has expired",
                [
                    f"It worked until {approval._when(request.expires_at)}. Nothing was recorded. "
                    f"Ask the sender for a new link (bulletin approve {name} --request "
                    f"{request.approver})."
                ],
                f"request {request_id}: expired",
            )
        if request.approver not in settings.approvers:
            return Refused(
                403,
                "You are not an approver any more",
                [
                    f"{request.approver} is no longer in the list of approvers "
                    "(BULLETIN_APPROVERS), so this link cannot approve anything."
                ],
                f"request {request_id}: approver no longer listed",
            )
        if decided is not None:
            what = "approved it" if decided.kind == Kind.APPROVED else "asked for changes"
            return Refused(
                410,
                "This approval link has been used",
                [
                    f"{decided.who} {what} with it on {approval._when(decided.created_at)}. "
                    "A link records one decision; nothing more was recorded."
                ],
                f"request {request_id}: already used",
            )
        try:
            checked = check_message(request.path, settings)
            version = approval.current_version(checked, settings)
        except BulletinError:
            checked, version = None, None
        if checked is None or version is None or version.fingerprint != request.fingerprint:
            return Refused(
                410,
                "This bulletin has changed since the link was sent",
                [
                    f"The link was for version {request.fingerprint[:12]} of {request.path}. "
                    "It has been edited since (or its layouts, sender or audience changed), "
                    "so the link cannot approve it. Nothing was recorded.",
                    f"The sender can ask again: bulletin approve {name} --request "
                    f"{request.approver}",
                ],
                f"request {request_id}: other version",
            )
        return Valid(request, checked, settings, version, token, expires)

    # --- pages ---

    def review(self, token: str, *, error: str = "", status: int = 200) -> tuple[int, str, str]:
        found = self.validate(token)
        if isinstance(found, Refused):
            return found.status, self.refused(found), found.note
        with self.webhook.lock:
            standing = approval.standing(
                ApprovalStore(self.webhook.tracker), found.version, found.settings
            )
        shown = approval.show(found.checked, found.settings, standing)
        page = self.render(
            found.settings,
            "review",
            "Approve this bulletin?",
            shown=shown,
            version=found.version,
            approver=found.request.who,
            token=found.token,
            expires=approval._when(found.request.expires_at),
            error=error,
        )
        return status, page, error and f"request {found.request.id}: {error}"

    def decide(self, token: str, decision: str, comment: str) -> tuple[int, str, str]:
        found = self.validate(token)
        if isinstance(found, Refused):
            return found.status, self.refused(found), found.note
        comment = comment.strip()[:MAX_COMMENT]
        if decision not in ("approve", "changes"):
            return self.review(token, error="Choose Approve or Ask for changes.", status=400)
        if decision == "changes" and not comment:
            return self.review(token, error="Say what should change, then ask.", status=400)
        request, version = found.request, found.version
        kind = Kind.APPROVED if decision == "approve" else Kind.CHANGES
        try:
            with self.webhook.lock:
                event = ApprovalStore(self.webhook.tracker).add(
                    message=request.message,
                    path=request.path,
                    fingerprint=version.fingerprint,
                    kind=kind,
                    approver=request.approver,
                    approver_name=request.approver_name,
                    route=Via.LINK,
                    request_id=request.id,
                    comment=comment if kind == Kind.CHANGES else "",
                    audience=version.audience,
                    audience_definition=version.definition,
                    text=version.text,
                    now=approval._iso(self.clock()),
                )
        except AlreadyDecided:  # two posts at once: the first one counts
            found = self.validate(token)
            assert isinstance(found, Refused)
            return found.status, self.refused(found), found.note
        when = approval._when(event.created_at)
        if kind == Kind.APPROVED:
            title = "Approved: thank you"
            paragraphs = [
                f"Your approval of version {version.short} of “{found.checked.message.subject}” "
                f"was recorded at {when}, for {event.who}.",
                "If the bulletin is edited before it is sent, it will need approving again.",
            ]
        else:
            title = "Your request for changes was sent back"
            paragraphs = [
                f"Recorded at {when}: “{comment}”.",
                "This version cannot be sent. You will get a new link when it has been changed.",
            ]
        return (
            200,
            self.render(found.settings, "done", title, paragraphs=paragraphs),
            (f"request {request.id}: {kind.value}"),
        )

    def refused(self, refused: Refused) -> str:
        return self.render(
            self.webhook.settings, "refused", refused.title, paragraphs=refused.paragraphs
        )

    def render(self, settings: Settings, state: str, title: str, **context: Any) -> str:
        import jinja2
        from markupsafe import Markup

        from bulletin.render import template_environment, template_problem
        from bulletin.web.webhook import Unavailable

        sender = " · ".join(s for s in (settings.organisation, settings.unit) if s)
        shown = context.get("shown")
        # Inside this page's <main>, the email's own main landmark is just a part of it.
        bulletin = Markup(_embedded(shown.body_html)) if shown is not None else ""
        values = {"state": state, "title": title, "sender": sender, "bulletin": bulletin}
        try:
            template = template_environment(settings.workdir).get_template("approval.html")
            return template.render({**values, **context})
        except jinja2.TemplateError as error:
            raise Unavailable(str(template_problem(error, settings.workdir))) from None


def _embedded(body_html: str) -> str:
    return re.sub(r'\srole="main"', "", body_html, count=1)


def _form(body: bytes) -> dict[str, str]:
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items() if values}


def routes(webhook) -> list[Route]:
    """The /approve route for the app factory (bulletin/web/webhook.py)."""
    from bulletin.web.webhook import METHODS, signed_link_page

    pages = ApprovalPages(webhook)

    def decide(request: Request, token: str, body: bytes):
        form = _form(body)
        token = token or form.get("t", "").strip()
        return pages.decide(token, form.get("decision", ""), form.get("comment", ""))

    approve = signed_link_page(
        webhook, MAX_FORM, lambda request, token: pages.review(token), decide
    )
    return [Route("/approve", approve, methods=METHODS)]
