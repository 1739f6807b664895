"""Client code in Pyro users' styles (:mod:`.pairs`), shared by the tests that run it."""

from .pairs import CLIENTS, Client

__all__ = ["CLIENTS", "Client"]
