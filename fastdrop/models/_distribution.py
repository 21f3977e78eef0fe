"""The active data-parallel distribution (None: one process), set by
``fastdrop.distributed`` (a floor above the models): the trainer asks for it here, without
importing MPI or that package."""

_current = None     # set by set_distribution
_scoped = []        # DataParallel.scope() stack (innermost last)


def active():
    """The DataParallel in force (innermost ``scope()``, else ``set_distribution``), or
    None."""
    if _scoped:
        return _scoped[-1]
    return _current
