"""
The `concord` command line (concord.cli.main) and the `concord-node` entry point
(concord.cli.node). docs/cli.md is the reference.
"""
