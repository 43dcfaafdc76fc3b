"""The command line (``telemetry-bench``): the top layer, over ``experiments``, ``harness`` and ``pipeline``."""
