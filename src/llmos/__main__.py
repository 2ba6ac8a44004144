"""`python -m llmos`: the `llmos` command (see `llmos.cli.launch`)."""

if __name__ == "__main__":
    from llmos.cli.launch import main

    main()
