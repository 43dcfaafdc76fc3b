"""The harness: runs the system under test (``pipeline``) as processes, finds or starts its services, injects
faults and accounts for every reading. Imports ``pipeline``; never ``experiments`` or the CLI."""
