"""Public pages of sent messages (issue 21): `GET /m/<reference>` and `…/notice.pdf`.

Served by `bulletin events serve`'s app (webhook.create_app adds `routes(webhook)`). They
only read: 200 with the page or PDF, 404 for no such page (or a `public: false` message),
410 with a page saying so once `bulletin unpublish` withdrew it. Pages and PDFs are rendered
once per sent version and kept in memory (WeasyPrint takes about a second).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bulletin import publish
from bulletin.ledger.publications import PublicationStore

if TYPE_CHECKING:
    from bulletin.web.webhook import Webhook

NOTICE = "/notice.pdf"
CACHED = 32  # rendered pages and PDFs kept


class PublicPages:
    """What the routes share: the webhook's settings and database, and a small cache."""

    def __init__(self, webhook: Webhook) -> None:
        self.webhook = webhook
        self.cache: OrderedDict[tuple, bytes] = OrderedDict()

    def answer(self, reference: str, pdf: bool) -> tuple[int, bytes, str]:
        """(status, body, media type) for one page or notice; reads only."""
        webhook = self.webhook
        with webhook.lock:
            webhook._check_open()
            store = PublicationStore(webhook.tracker)
            found = store.publication(reference)
            source = store.source(found.content_hash) if found else None
        if found is None or source is None:
            return 404, b"Not found.\n", "text/plain; charset=utf-8"
        settings = webhook.settings
        if found.withdrawn:
            page = publish.render_withdrawn(settings, found)
            return 410, page.encode(), "text/html; charset=utf-8"
        key = (found.reference, found.content_hash, found.sent_at, pdf)
        if key not in self.cache:
            message = publish.sent_message(settings, found.message, source)
            if not message.public:  # never published; belt and braces
                return 404, b"Not found.\n", "text/plain; charset=utf-8"
            if pdf:
                body = publish.render_notice(settings, found, message)
            else:
                # Relative to /m/<reference>: <reference>/notice.pdf is this page's notice.
                href = publish.page_path(found.reference).rsplit("/", 1)[1] + NOTICE
                body = publish.render_page(settings, found, message, notice_href=href).encode()
            self.cache[key] = body
            while len(self.cache) > CACHED:
                self.cache.popitem(last=False)
        self.cache.move_to_end(key)
        kind = "application/pdf" if pdf else "text/html; charset=utf-8"
        return 200, self.cache[key], kind


def routes(webhook: Webhook) -> list[Route]:
    pages = PublicPages(webhook)

    async def public(request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response("Method not allowed.\n", 405, {"Allow": "GET, HEAD"})
        reference = request.path_params["reference"]
        pdf = reference.endswith(NOTICE)
        if pdf:
            reference = reference.removesuffix(NOTICE)
        status, body, kind = await run_in_threadpool(pages.answer, reference, pdf)
        headers = {"Content-Disposition": 'inline; filename="notice.pdf"'} if pdf else None
        return Response(body, status, headers, media_type=kind)

    return [Route("/m/{reference:path}", public, methods=["GET", "HEAD", "POST", "PUT", "DELETE"])]
