"""The application layer: the ``ppvae`` command line, its zoo table, run directories, and one
module per command. Only this layer imports ``ppvae.models`` and ``ppvae.guides``."""
