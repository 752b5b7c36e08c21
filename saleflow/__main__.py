"""`python -m saleflow`: the same command line as the `saleflow` script."""

from .cli.app import main

if __name__ == "__main__":
    main(prog_name="saleflow")
