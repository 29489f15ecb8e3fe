"""``launch.py`` imported as a module (it is a script, not part of the package), for tests
that call ``launch.main(argv)`` in-process."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location("launch", ROOT / "launch.py")
launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launch)
