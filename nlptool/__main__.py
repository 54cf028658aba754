"""`python -m nlptool` (and so `torchrun -m nlptool`) runs the CLI."""

from nlptool.cli import main

main()
