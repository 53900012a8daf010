"""One module per ``sbn-bench`` subcommand; each defines ``add_parser(subparsers)`` and ``run(args) -> int``.

Every non-underscore module here is a subcommand (dropping one in is the whole change); ``ORDER``
fixes the order ``sbn-bench --help`` shows the common ones in, the rest follow alphabetically.
"""

import pkgutil

ORDER = ["run", "report", "time", "check", "validate", "train", "runs", "show", "export", "list", "exact", "problem", "env"]


def command_names() -> list[str]:
    found = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return [n for n in ORDER if n in found] + sorted(found - set(ORDER))
