"""``python -m minigpt_lib``: the command line of :mod:`minigpt_lib.cli`."""

from .cli import main

raise SystemExit(main())
