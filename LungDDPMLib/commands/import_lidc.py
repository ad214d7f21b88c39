"""``lungddpm import-lidc``: LIDC-IDRI CT series and reader XML to CT, layout, segmentation and a nodule table.

One case (``--dicom SERIES_DIR --xml READER_XML``) or a whole download tree (``--lidc-root ROOT``); the rules of
:mod:`LungDDPMLib.dicom.lidc_consensus` are options here.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-lidc",
        help="import LIDC-IDRI cases: CT (HU as stored), layout (1 lung, nodules 3/4/5 by median texture), "
        ".seg.nrrd and a LUNA16-like nodule CSV",
    )
    src = p.add_argument_group("input (one case, or a LIDC-IDRI tree)")
    src.add_argument("--dicom", metavar="SERIES_DIR", help="folder with the CT series' DICOM files")
    src.add_argument("--xml", metavar="READER_XML", help="the series' LIDC reader XML")
    src.add_argument("--lidc-root", metavar="ROOT", help="a LIDC-IDRI tree: every reader XML matched to its series")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--name", help="file-name stem of the outputs (one case only; default: the PatientID)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace earlier outputs (otherwise refused; a batch skips them)"
    )
    rules = p.add_argument_group("rules")
    rules.add_argument("--consensus", type=float, default=0.5, help="share of a nodule's readers a voxel needs")
    rules.add_argument("--min-readers", type=int, default=1, help="draw nodules marked by at least this many readers")
    rules.add_argument(
        "--cluster",
        choices=("centroid", "overlap"),
        default="centroid",
        help="join readers' marks whose centroids are within max(radii, --cluster-floor-mm), or whose masks overlap",
    )
    rules.add_argument("--cluster-floor-mm", type=float, default=3.0, help="least joining distance (mm)")
    rules.add_argument(
        "--diameter",
        choices=("max-extent", "equivalent-sphere"),
        default="max-extent",
        help="largest in-slice extent of the consensus mask, or the diameter of the sphere of its volume",
    )
    rules.add_argument("--min-diameter-mm", type=float, default=3.0, help="draw nodules at least this large")
    rules.add_argument("--ggo-texture-max", type=float, default=2.0, help="median texture <= this: ground-glass")
    rules.add_argument("--solid-texture-min", type=float, default=4.0, help="median texture >= this: solid")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..dicom.lidc_consensus import ConsensusRules
    from ..errors import InputError

    single = args.dicom is not None or args.xml is not None
    if single == (args.lidc_root is not None):
        raise InputError("give either --dicom SERIES_DIR with --xml READER_XML, or --lidc-root ROOT")
    if single and (args.dicom is None or args.xml is None):
        raise InputError("--dicom and --xml go together: the series folder and its reader XML")
    if args.name and not single:
        raise InputError("--name names one case; a --lidc-root batch names each case by its PatientID")
    rules = ConsensusRules(
        consensus=args.consensus,
        min_readers=args.min_readers,
        cluster=args.cluster,
        cluster_floor_mm=args.cluster_floor_mm,
        diameter=args.diameter,
        min_diameter_mm=args.min_diameter_mm,
        ggo_texture_max=args.ggo_texture_max,
        solid_texture_min=args.solid_texture_min,
    )
    if single:
        from ..dicom.lidc_import import import_lidc

        paths = import_lidc(args.dicom, args.xml, args.out, rules, name=args.name, overwrite=args.overwrite)
        print(json.dumps({k: str(v) for k, v in paths.items()}))
        return 0
    from ..dicom.lidc_batch import import_lidc_tree
    from .exit_codes import EXIT_ERROR

    report = import_lidc_tree(
        args.lidc_root, args.out, rules, progress=lambda line: print(line, file=sys.stderr), overwrite=args.overwrite
    )
    print(json.dumps(report.summary()))
    return EXIT_ERROR if report.failed else 0
