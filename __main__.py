"""``python -m bert_cased_L_24_H_1024_A_16``: download, convert and inspect the pretrained weights (see cli.py)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
