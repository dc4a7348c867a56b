"""``python -m matryoshka_retrieval.cli``: the ``matryoshka`` command."""

import sys

from . import main

sys.exit(main())
