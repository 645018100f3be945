"""`tfattack-evaluate` from a source checkout: the tool is tfattack.cli.evaluate (see its --help)."""

from tfattack.cli.evaluate import main

if __name__ == "__main__":
    main()
