"""`tfattack-compare` from a source checkout: the tool is tfattack.cli.compare (see its --help)."""

from tfattack.cli.compare import main

if __name__ == "__main__":
    main()
