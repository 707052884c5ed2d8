"""Writes a few files into the image, computed by the standard library."""

import hashlib
import json
import os
import sys

out = sys.argv[1]
os.makedirs(os.path.join(out, "data"), exist_ok=True)
with open(os.path.join(out, "greeting.txt"), "w") as f:
    f.write(f"hello from CPython {sys.version_info.major}.{sys.version_info.minor} on {sys.platform}\n")
squares = {str(n): n * n for n in range(1, 11)}
with open(os.path.join(out, "data", "squares.json"), "w") as f:
    json.dump(squares, f, sort_keys=True)
digest = hashlib.sha256(b"kiln").hexdigest()
with open(os.path.join(out, "data", "sha256.txt"), "w") as f:
    f.write(digest + "\n")
print(f"wrote {len(os.listdir(out))} entries to {out}")
