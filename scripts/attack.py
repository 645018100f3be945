"""`tfattack-attack` from a source checkout: the tool is tfattack.cli.attack (see its --help)."""

from tfattack.cli.attack import main

if __name__ == "__main__":
    main()
