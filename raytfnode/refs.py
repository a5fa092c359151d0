"""Reading Ray calls whose answers no longer matter.

A call's error that nobody reads is printed by Ray as an unhandled error when
its ref is dropped. After a failure (a feed, a node, a restart) the calls still
in flight are read here, quietly, so the failure the user sees is the one raised.
"""
import ray


def discard(refs, timeout):
    """Reads the calls in ``refs`` that end within ``timeout`` s, ignoring their results and errors.

    Returns the refs that had not ended by then (a caller may keep them and read them later).
    """
    refs = list(refs)
    if not refs:
        return []
    ready, late = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    for ref in ready:
        try:
            ray.get(ref)
        except Exception:  # noqa: BLE001  (the answer no longer matters)
            pass
    return late
