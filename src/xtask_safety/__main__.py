import sys

from xtask_safety.cli import main

# The guard matters: vLLM starts its workers with `spawn`, which re-imports this module under another name.
if __name__ == "__main__":
    sys.exit(main())
