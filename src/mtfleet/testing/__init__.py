"""Test and demo helpers: tiny models, test engines, local clusters."""

from mtfleet.testing.engines import ReverseEngine

__all__ = ["ReverseEngine"]
