"""Runs inside a decoding worker (tests/test_imagenet.py) to report what that process has imported."""

import sys


def imported_modules() -> list:
    return sorted(sys.modules)
