"""Pytest configuration: put ``code/`` on the import path.

The repository's scripts run as ``python code/<script>.py`` from the root, so
their imports are ``from networks...``, ``from utils...``, ``from dataloaders...``.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = os.path.join(ROOT, "code")
if CODE not in sys.path:
    sys.path.insert(0, CODE)

# ../shared/reference beside the checkout holds the reference facts (optional).
SHARED_REFERENCE = os.path.join(os.path.dirname(ROOT), "shared", "reference")
