"""Everything bulletin serves, as ASGI applications (Starlette) run by uvicorn.

- `webhook`: `bulletin events serve` — SendGrid's signed Event Webhook and the unsubscribe pages.
- `preview`: `bulletin preview MESSAGE --serve` — a live, read-only page on 127.0.0.1.
- `serving`: binding, the uvicorn settings they share, threads and worker processes.

Nothing here is imported by `bulletin --help`: the commands that serve import it.
"""
