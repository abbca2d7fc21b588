"""Tests of the Hopper SDK against the real services (see conftest.py)."""
