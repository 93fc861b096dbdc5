"""The runtime: config, messages, store, endpoints, supervisor, CLI.

The public pieces are re-exported by :mod:`isheep`; modules here are free to change.
"""
