"""`python -m backoffice`: serve the reference data-center application."""

import sys

from backoffice.command import main

if __name__ == "__main__":
    sys.exit(main())
