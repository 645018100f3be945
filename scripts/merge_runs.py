"""`tfattack-merge-runs` from a source checkout: the tool is tfattack.cli.merge_runs (see its --help)."""

from tfattack.cli.merge_runs import main

if __name__ == "__main__":
    main()
