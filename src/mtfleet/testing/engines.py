"""The reverse engine, for tests; it lives in mtfleet.engines.reverse, as `--engine reverse`."""

from mtfleet.engines.reverse import (
    DELAY_VARIABLE,
    FAIL_ON_VARIABLE,
    FAULT_EVERY_VARIABLE,
    FAULTS_VARIABLE,
    HANG_ON_VARIABLE,
    OOM_ABOVE_VARIABLE,
    OutOfMemoryError,
    ReverseEngine,
)

__all__ = [
    "DELAY_VARIABLE",
    "FAIL_ON_VARIABLE",
    "FAULTS_VARIABLE",
    "FAULT_EVERY_VARIABLE",
    "HANG_ON_VARIABLE",
    "OOM_ABOVE_VARIABLE",
    "OutOfMemoryError",
    "ReverseEngine",
]
