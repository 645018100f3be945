"""`tfattack-download` from a source checkout: the tool is tfattack.cli.download (see its --help)."""

from tfattack.cli.download import main

if __name__ == "__main__":
    main()
