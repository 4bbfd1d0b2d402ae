"""`python -m tflight.cli`: the same as the `tflight` command."""

from tflight.cli import main

main()
