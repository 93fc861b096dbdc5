"""The runtime, in layers (``docs/architecture.md``), lowest first:

- ``core``: config, messages, errors, the shared types, the role and endpoint interfaces;
- ``store``, ``serving``, ``training``, ``data``: the run store, what serves the models, the
  training job, seeds/dedup/checks (independent of each other, and of the roles);
- ``pipeline``: a run, its rounds and the wiring of the roles;
- ``cli``: the ``isheep`` command, one module per subcommand.

The public pieces are re-exported by :mod:`isheep`; modules here are free to change.
"""
