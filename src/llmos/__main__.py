"""`python -m llmos`: the `llmos` command (see `llmos.cli.launch`)."""

from llmos.cli.launch import main

main()
