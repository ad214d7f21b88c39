"""``lungddpm probe devices|model FILE``: what a GUI asks the engine, answered as one JSON event per line.

Why a command: the Slicer module must not import torch (absent in a stock Slicer, and a CUDA context in Slicer's
process holds GPU memory for the whole session) nor hash a large model file on its main thread, so it runs this
in a short-lived process and reads the event. The events are described in :mod:`LungDDPMLib.gui_tasks`.
"""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="list compute devices or describe a model file, as JSON events (for GUIs)")
    what = p.add_subparsers(dest="what", metavar="WHAT")
    what.required = True
    what.add_parser("devices", help="devices this torch can use, with free GPU memory")
    model = what.add_parser("model", help="recognise a model file by its sha256 (empty: the bundled demo model)")
    model.add_argument("file", nargs="?", default="", help="a .pt file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..gui_tasks import devices_event, model_event
    from ..worker import emit_json_lines

    emit = emit_json_lines(sys.stdout)
    emit(devices_event() if args.what == "devices" else model_event(args.file))
    return 0
