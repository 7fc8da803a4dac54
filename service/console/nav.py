"""The console's navigation: one registry, filled by the view modules.

``register("Flags", "console.flags", order=10)`` adds an entry; ``role``
hides it from tokens below that role (the view still checks the role
itself). ``active`` is the URL prefix that highlights it (default: the
entry's own path).
"""

from dataclasses import dataclass

from flask import request, url_for

from ..auth import RANK


@dataclass(frozen=True)
class NavItem:
    label: str
    endpoint: str
    role: str = "viewer"
    order: int = 100
    active: str | None = None

    @property
    def url(self) -> str:
        return url_for(self.endpoint)

    @property
    def is_active(self) -> bool:
        prefix = self.active or self.url
        if prefix == "/":
            return request.path == "/"
        return request.path == prefix or request.path.startswith(prefix.rstrip("/") + "/")


_items: dict[str, NavItem] = {}


def register(label: str, endpoint: str, *, role: str = "viewer", order: int = 100, active: str | None = None) -> None:
    assert role in RANK, role
    _items[endpoint] = NavItem(label, endpoint, role, order, active)


def visible(role: str) -> list[NavItem]:
    return sorted((i for i in _items.values() if RANK[role] >= RANK[i.role]), key=lambda i: (i.order, i.label))
