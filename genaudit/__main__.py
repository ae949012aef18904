"""`python -m genaudit` runs the command line (the same as the `genaudit` command)."""

from genaudit.cli import main

main()
