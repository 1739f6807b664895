"""The application layer: the ``ppvae`` command line.

Only this layer imports ``ppvae.models`` and ``ppvae.guides``.

* :mod:`~ppvae.app.cli`: the parser and ``main``, dispatching to one module per command;
  :mod:`~ppvae.app.train`, :mod:`~ppvae.app.evaluate`, :mod:`~ppvae.app.gaps`,
  :mod:`~ppvae.app.sample`, :mod:`~ppvae.app.demo`, :mod:`~ppvae.app.ppca` and
  :mod:`~ppvae.app.info` are the commands, each with ``add_arguments(parser)`` and
  ``main(args)``.
* :mod:`~ppvae.app.zoo`: the zoo table, models, guides and objectives by name.
* :mod:`~ppvae.app.inputs`: the user's input checked (data files, device, configuration), with
  :mod:`~ppvae.app.config`, the typed schema of a run's configuration.
* :mod:`~ppvae.app.files`: writing a run directory safely (whole-file replacement, the
  directory lock, stale temporaries removed).
* :mod:`~ppvae.app.trained`: a run's model, guide and data, built or opened from a run, and the
  rows a command uses (``select_rows``: a seeded random subset unless ``--first-rows``).
* :mod:`~ppvae.app.runs`: run directories (config.toml, metrics.jsonl, checkpoint, report with
  each section's provenance and diagnostic warnings; sections from an older checkpoint marked
  stale).
"""
