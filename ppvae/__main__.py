"""``python -m ppvae``: the command line (:func:`ppvae.app.cli.main`)."""

from .app.cli import main

raise SystemExit(main())
