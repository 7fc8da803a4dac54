"""A small structural diff of JSON documents, for flag history."""

_MISSING = object()


def json_diff(before, after, path: str = "") -> list[dict]:
    """Changes from ``before`` to ``after`` as ``[{path, before, after}]``.

    Objects are compared key by key and lists of equal length element by
    element, so a changed rule condition shows as one small change; anything
    else that differs is reported whole at its path.
    """
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        changes = []
        for key in list(before) + [k for k in after if k not in before]:
            changes += json_diff(before.get(key, _MISSING), after.get(key, _MISSING), _join(path, key))
        return changes
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        changes = []
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            changes += json_diff(b, a, _join(path, i))
        return changes
    return [{"path": path, "before": None if before is _MISSING else before,
             "after": None if after is _MISSING else after,
             "op": "add" if before is _MISSING else "remove" if after is _MISSING else "replace"}]


def _join(path: str, part) -> str:
    return f"{path}.{part}" if path else str(part)
