"""telemetry-bench: the pipeline under test (one module per stage, one package per kind of variant)."""

__version__ = "0.1.0"
