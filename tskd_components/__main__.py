"""``python -m tskd_components ...`` = the ``tskd`` command."""

from .pipeline.cli import main

raise SystemExit(main())
