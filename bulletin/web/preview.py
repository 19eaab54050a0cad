"""`bulletin preview MESSAGE --serve`: a live, read-only page on 127.0.0.1.

The page shows the inbox line, the HTML email at desktop and at 375 px phone width (sandboxed
iframes, no scripts), the plain-text part, the print PDF and postal letters, a contact picker
over the audience, its size and every problem `bulletin check` finds. Files are watched
(watchfiles); a change is pushed to the page as a server-sent event and the page fetches the
new state. A file that no longer parses shows its problems while the last good render stays.

Nothing here sends mail or writes a file; every route is GET. Only our own small script and
stylesheet run on the page (a strict Content-Security-Policy); everything shown is escaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bulletin import fields
from bulletin.check import Checked, check_message
from bulletin.config import Settings, load_settings
from bulletin.contacts import Contact, ContactList
from bulletin.contacts import load_contacts as read_contacts
from bulletin.errors import BulletinError

HOST = "127.0.0.1"
SEARCH_LIMIT = 20
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
EMAIL_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox"
)
COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def static(name: str) -> bytes:
    return (resources.files("bulletin") / "web" / "static" / name).read_bytes()


def contact_key(contact: Contact) -> str:
    """How the page names a contact: the address, or FILE:LINE for a postal-only one."""
    return contact.email or contact.where


@dataclass
class _Cached:
    stamp: tuple
    contacts: ContactList


class Preview:
    """One message's live preview: the last good render, the latest problems, a version."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name, self.workdir = name, workdir
        self.version = 0
        self.good: Checked | None = None  # the last check that compiled
        self.settings: Settings | None = None
        self.problems: list[str] = []
        self.broken = False  # the latest check did not compile: showing the last good one
        self._contacts: dict[tuple, _Cached] = {}
        self._pdfs: dict[tuple, bytes] = {}
        self._lock = threading.Lock()

    # --- building ---

    def _load_contacts(self, files: list[Path], workdir: Path) -> ContactList:
        """contacts.load_contacts, reused while the files' sizes and times are unchanged."""
        key = tuple(str(f) for f in files)
        stamp = tuple((f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())
        cached = self._contacts.get(key)
        if cached is None or cached.stamp != stamp:
            cached = self._contacts[key] = _Cached(stamp, read_contacts(files, workdir))
        return cached.contacts

    def rebuild(self) -> None:
        """Check the message again (in a thread); keep the last good render if it fails."""
        with self._lock:
            try:
                settings = load_settings(self.workdir)
                checked = check_message(self.name, settings, load_contacts=self._load_contacts)
                problems = [str(p) for p in checked.problems]
            except BulletinError as error:
                checked, problems = None, error.lines()
            if checked is not None and checked.compiled is not None:
                self.good, self.settings = checked, settings
                self.broken = False
            else:
                self.broken = True
            self.problems = problems
            self._pdfs.clear()
            self.version += 1

    def watch_paths(self) -> list[Path]:
        """Folders holding the message, the templates, the contact lists and .env."""
        from bulletin.message import resolve_path

        paths = {resolve_path(self.name, self.workdir).parent, self.workdir}
        if (self.workdir / "templates").is_dir():
            paths.add(self.workdir / "templates")
        if self.good is not None:
            paths.update(f.parent for f in self.good.contact_list.files)
        paths.add(self.workdir / "contacts")
        return sorted(p for p in paths if p.is_dir())

    def relevant(self, path: Path) -> bool:
        """A change worth a rebuild: the message, a template, a contact list, .env."""
        from bulletin.message import resolve_path

        if path == resolve_path(self.name, self.workdir) or path.name == ".env":
            return True
        if path.parent == self.workdir / "templates":
            return True
        if path.suffix.lower() == ".csv":
            return True
        files = self.good.contact_list.files if self.good else []
        return any(path == f for f in files)

    # --- reading (any thread) ---

    def audience(self) -> list[Contact]:
        if self.good is None:
            return []
        return self.good.audience or self.good.contact_list.contacts

    def contact(self, key: str | None) -> Contact | None:
        pool = self.audience()
        if key:
            for contact in pool:
                if contact_key(contact) == key:
                    return contact
        return pool[0] if pool else None

    def search(self, query: str) -> dict[str, Any]:
        words = query.casefold().split()
        found, total = [], 0
        for contact in self.audience():
            text = f"{contact.name} {contact.email} {contact.get('ward')}".casefold()
            if all(w in text for w in words):
                total += 1
                if len(found) < SEARCH_LIMIT:
                    found.append(_describe(contact))
        return {"total": total, "contacts": found}

    def state(self, key: str | None) -> dict[str, Any]:
        good, settings = self.good, self.settings
        base = {
            "version": self.version,
            "message": self.name,
            "problems": self.problems,
            "broken": self.broken,
        }
        if good is None or good.compiled is None or settings is None:
            return {**base, "ready": False}
        contact = self.contact(key)
        rendered = good.compiled.render(contact, *_links(settings))
        message = good.message
        sender = message.sender
        return {
            **base,
            "ready": True,
            "sender": f"{sender.name} <{sender.email}>" if sender else "",
            "subject": rendered.subject,
            "preheader": _fill(message.preheader, contact),
            "text": rendered.text,
            "contact": _describe(contact) if contact else None,
            "audience": len(good.audience),
            "emailable": len(good.recipients),
            "postal": len(good.postal),
        }

    def email_html(self, key: str | None) -> str:
        good, settings = self.good, self.settings
        if good is None or good.compiled is None or settings is None:
            return "<!doctype html><p>Nothing to show yet.</p>"
        return good.compiled.render(self.contact(key), *_links(settings)).html

    def pdf(self, key: str | None, *, letters: bool = False) -> bytes:
        """The print version for one contact, or the audience's postal letters (cached)."""
        from bulletin.preview import render_print
        from bulletin.render import render_pdf

        good, settings, version = self.good, self.settings, self.version
        if good is None or good.compiled is None or settings is None:
            raise BulletinError("nothing to print yet")
        cache_key = (version, "letters" if letters else key or "")
        if cache_key not in self._pdfs:
            if letters:
                data, _ = render_print(good, settings, notice=False)
            else:
                data = render_pdf(
                    good.compiled,
                    [self.contact(key)],
                    settings.workdir,
                    organisation=settings.organisation,
                    unit=settings.unit,
                )
            self._pdfs[cache_key] = data
        return self._pdfs[cache_key]


def _links(settings: Settings) -> tuple[str, str]:
    """The preview's unsubscribe and "Was this useful?" links (they lead to no one's answer)."""
    from bulletin.preview import preview_feedback_url, preview_unsubscribe_url

    return preview_unsubscribe_url(settings), preview_feedback_url(settings)


def _fill(text: str, contact: Contact | None) -> str:
    segments, _ = fields.parse(text)
    get = contact.get if contact is not None else (lambda key: "")
    return "".join(s if isinstance(s, str) else (get(s.key) or s.fallback) for s in segments)


def _describe(contact: Contact) -> dict[str, str]:
    return {
        "key": contact_key(contact),
        "name": contact.name,
        "email": contact.email,
        "ward": contact.get("ward"),
        "where": contact.where,
    }


class Hub:
    """Wakes every open page when the preview's version changes."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        self.notify()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


def _page() -> str:
    return static("preview.html").decode()


def create_app(preview: Preview, *, watch: bool = True) -> Starlette:
    """The preview's Starlette app; `watch` starts the file watcher with the app."""
    hub = Hub()
    rebuild_lock = asyncio.Lock()

    async def rebuild() -> None:
        async with rebuild_lock:
            await run_in_threadpool(preview.rebuild)
        hub.notify()

    async def watcher() -> None:
        from watchfiles import awatch

        stop = asyncio.Event()
        while not hub.stopping:
            paths = preview.watch_paths()
            async for changes in awatch(
                *paths,
                recursive=False,
                step=20,
                debounce=400,
                stop_event=stop,
                watch_filter=lambda change, path: preview.relevant(Path(path)),
            ):
                del changes
                await rebuild()
                if preview.watch_paths() != paths:
                    break

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if preview.version == 0:
            await rebuild()
        task = asyncio.create_task(watcher()) if watch else None
        try:
            yield
        finally:
            hub.stopping = True
            hub.notify()
            if task is not None:
                task.cancel()

    def headers(extra: dict[str, str] | None = None) -> dict[str, str]:
        return {**COMMON_HEADERS, **(extra or {})}

    async def page(request: Request) -> Response:
        return Response(
            _page(),
            media_type="text/html; charset=utf-8",
            headers=headers({"Content-Security-Policy": PAGE_POLICY}),
        )

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        kinds = {"preview.js": "text/javascript", "preview.css": "text/css"}
        if name not in kinds:
            return Response("Not found.\n", 404, headers=headers())
        return Response(static(name), media_type=kinds[name] + "; charset=utf-8", headers=headers())

    async def state(request: Request) -> Response:
        data = await run_in_threadpool(preview.state, request.query_params.get("contact"))
        return JSONResponse(data, headers=headers())

    async def email(request: Request) -> Response:
        body = await run_in_threadpool(preview.email_html, request.query_params.get("contact"))
        return Response(
            body,
            media_type="text/html; charset=utf-8",
            headers=headers({"Content-Security-Policy": EMAIL_POLICY}),
        )

    async def search(request: Request) -> Response:
        found = await run_in_threadpool(preview.search, request.query_params.get("q", "")[:200])
        return JSONResponse(found, headers=headers())

    async def pdf(request: Request) -> Response:
        letters = request.url.path == "/letters.pdf"
        try:
            data = await run_in_threadpool(
                lambda: preview.pdf(request.query_params.get("contact"), letters=letters)
            )
        except BulletinError as error:
            text = "\n".join(error.lines()) or str(error)
            return Response(
                f"<!doctype html><title>No PDF</title><p>{html.escape(text)}</p>",
                409,
                media_type="text/html; charset=utf-8",
                headers=headers({"Content-Security-Policy": "default-src 'none'"}),
            )
        return Response(
            data,
            media_type="application/pdf",
            headers=headers({"Content-Disposition": "inline"}),
        )

    async def updates(request: Request) -> Response:
        async def stream():
            yield "retry: 500\n\n"
            seen = -1
            while not hub.stopping:
                if preview.version != seen:
                    seen = preview.version
                    yield f"data: {seen}\n\n"
                else:
                    yield ": idle\n\n"
                await hub.wait(15)
            yield "event: bye\ndata: stopping\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers())

    get = ["GET", "HEAD"]
    app = Starlette(
        routes=[
            Route("/", page, methods=get),
            Route("/static/{name}", asset, methods=get),
            Route("/state", state, methods=get),
            Route("/email", email, methods=get),
            Route("/contacts", search, methods=get),
            Route("/print.pdf", pdf, methods=get),
            Route("/letters.pdf", pdf, methods=get),
            Route("/updates", updates, methods=get),
        ],
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=[HOST, "localhost"])],
        lifespan=lifespan,
    )
    app.state.hub = hub
    return app


def make_server(name: str, workdir: Path, port: int = 0, *, watch: bool = True):
    """A bound preview server on 127.0.0.1 (`serving.WebServer`), not yet serving."""
    from bulletin.message import resolve_path
    from bulletin.web.serving import WebServer

    path = resolve_path(name, workdir)
    if not path.is_file():
        raise BulletinError(f"{path}: no such message; run `bulletin new NAME` to start one")
    preview = Preview(name, workdir)
    app = create_app(preview, watch=watch)
    return WebServer(
        app,
        HOST,
        port,
        lifespan="on",
        timeout_graceful_shutdown=2,
        before_shutdown=[app.state.hub.stop],
    )


def serve(
    name: str,
    workdir: Path,
    *,
    port: int = 0,
    open_browser: bool = True,
    say: Callable[[str], None],
) -> None:
    """Serve the live preview until Ctrl-C; prints the address and opens it in a browser."""
    server = make_server(name, workdir, port)
    say(f"Previewing {name} at {server.url}/ (read-only; Ctrl-C to stop)")
    if open_browser:
        import webbrowser

        threading.Timer(0.3, webbrowser.open, args=(server.url + "/",)).start()
    try:
        server.serve_forever()
    finally:
        server.server_close()
