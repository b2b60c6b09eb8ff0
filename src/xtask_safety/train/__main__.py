"""``accelerate launch -m xtask_safety.train --config recipes/...yaml``"""

import sys

from xtask_safety.models import offline_defaults

if __name__ == "__main__":
    offline_defaults()  # before transformers/huggingface_hub are imported: they read it once, at import
    from xtask_safety.cli import run_guarded
    from xtask_safety.train.run import main

    sys.exit(run_guarded(lambda: main(sys.argv[1:])))
