"""``python -m edgeseg.cli`` (and ``torchrun -m edgeseg.cli``) runs the edgeseg command."""
from edgeseg.cli.main import main

main()
