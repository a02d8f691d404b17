"""Tests of the inference backend adapters and the load simulator."""
