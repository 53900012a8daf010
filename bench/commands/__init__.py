"""One module per ``sbn-bench`` subcommand; each defines ``add_parser(subparsers)`` and ``run(args) -> int``.

``COMMANDS`` lists them in the order ``sbn-bench --help`` shows them.
"""

COMMANDS = ["list", "exact", "problem"]
