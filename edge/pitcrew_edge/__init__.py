"""Pitcrew's delivery front: the edge (``make edge``) and the /sdk/v1
handlers the service's asynchronous worker shares with it (docs/delivery.md).

No Flask, no SQLAlchemy: the edge needs the engine (pitcrew-sdk), an ASGI
server (uvicorn) and an HTTP client (httpx).
"""
