"""
`concord-node --config FILE [--join]`: run one node, exactly as
`python -m concord.supervisor` does, after checking that the `supervisor` package is
Concord's (concord.supervisor_clash): a clash with PyPI's supervisord is one line on
stderr and exit code 2, not a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        import concord.supervisor_clash  # noqa: F401, PLC0415
    except ImportError as exc:  # SupervisorClashError (an ImportError) names both packages
        print(f"concord-node: error: {exc}", file=sys.stderr)
        return 2
    from concord.supervisor import main as run_node  # noqa: PLC0415

    return run_node(argv)


if __name__ == "__main__":
    sys.exit(main())
