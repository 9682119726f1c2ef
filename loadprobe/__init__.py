"""loadprobe: degraded-mode load tests for the four towns' shared back-office,
and the reference data-center application those tests can run against."""

__version__ = "0.1.0"
