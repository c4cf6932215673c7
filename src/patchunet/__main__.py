"""`python -m patchunet` is the `patchunet` command."""

from patchunet.cli import main

if __name__ == "__main__":  # not when a spawned process (a Dask worker started here) imports it
    main()
