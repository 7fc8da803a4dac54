from .errors import PreconditionFailed


def check_version(current: int, if_match: int | None) -> None:
    """Optimistic concurrency: a write naming a stale version changes nothing."""
    if if_match is not None and if_match != current:
        raise PreconditionFailed(
            f"The resource is at version {current}, not {if_match}.",
            {"If-Match": [f"Stale version {if_match}; current is {current}."]},
        )
