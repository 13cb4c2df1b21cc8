"""The reverse engine, for tests; it lives in mtfleet.engines.reverse, as `--engine reverse`."""

from mtfleet.engines.reverse import DELAY_VARIABLE, FAIL_ON_VARIABLE, ReverseEngine

__all__ = ["DELAY_VARIABLE", "FAIL_ON_VARIABLE", "ReverseEngine"]
