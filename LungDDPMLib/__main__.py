"""``python -m LungDDPMLib`` runs the ``lungddpm`` command (handy inside Slicer's PythonSlicer)."""

import sys

from .cli import main

sys.exit(main())
