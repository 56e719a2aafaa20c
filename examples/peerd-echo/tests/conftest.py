"""
Make :mod:`peerd_echo` importable when these tests run from a peerd checkout
(``python -m pytest examples/peerd-echo/tests``) without installing
peerd-echo. An installed peerd-echo comes first on ``sys.path`` and wins.
"""

import sys
from pathlib import Path

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
if _PACKAGE_ROOT not in sys.path:
    sys.path.append(_PACKAGE_ROOT)
