"""``python -m pipeline.backend``."""

from pipeline.backend.server import main

raise SystemExit(main())
