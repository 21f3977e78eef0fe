"""``python -m fastdrop``: the command line (``fastdrop.cli``)."""
import sys

from .cli import *  # noqa: F401,F403  (tests and scripts use fastdrop.__main__.<name>)
from .cli import build_model, build_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
