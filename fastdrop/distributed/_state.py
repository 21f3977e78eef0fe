"""The active data-parallel distribution (None: one process).  Kept apart from the rest of
``fastdrop.distributed`` so that the trainer can ask for it without importing MPI."""

_current = None     # set by set_distribution
_scoped = []        # DataParallel.scope() stack (innermost last)


def active():
    """The DataParallel in force (innermost ``scope()``, else ``set_distribution``), or
    None."""
    if _scoped:
        return _scoped[-1]
    return _current
