"""genaudit's version, in a module of its own so that nothing needs to import the package front for it."""

__version__ = "0.5.9"
