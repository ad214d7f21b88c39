"""One module per ``lungddpm`` subcommand, each with ``add_parser(subparsers)`` and ``run(args) -> int``."""
