"""Dropout-rate search (public path; the search lives in ``fastdrop.integrations.tune``,
its command line in ``fastdrop.cli.tune``)."""
from .cli.tune import add_parser, main  # noqa: F401
from .integrations.tune import *  # noqa: F401,F403
from .integrations.tune import DropoutSearchResult, search_dropout  # noqa: F401
