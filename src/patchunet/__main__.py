"""`python -m patchunet` is the `patchunet` command."""

from patchunet.cli import main

main()
