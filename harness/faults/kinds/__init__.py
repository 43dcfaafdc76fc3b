"""The fault kinds, one file each (``harness.faults.base.FaultKind``); every module here is imported and every
subclass that sets ``name`` is registered (``harness.faults.FAULTS``). A new kind is one new file here, or a plugin
module named in ``TELEMETRY_PLUGINS``."""
