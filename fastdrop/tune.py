"""Dropout-rate search (public path; the code lives in ``fastdrop.integrations.tune``)."""
from .integrations.tune import *  # noqa: F401,F403
from .integrations.tune import (DropoutSearchResult, add_parser, main,  # noqa: F401
                                search_dropout)
