"""Run the command line as `python -m lrdiag`."""

from lrdiag.cli import main

main()
