"""SRM and LRM worker service."""

from ._service import Worker

__all__ = ["Worker"]
