"""The wheel holds the package only: no tests, fixtures, data, benchmarks, examples or docs."""

import sys
import zipfile

wheel = sys.argv[1]
names = zipfile.ZipFile(wheel).namelist()
top = {n.split("/", 1)[0] for n in names}
allowed = {"rnafm_sklearn"} | {t for t in top if t.endswith(".dist-info")}
stray = sorted(top - allowed)
bulky = [n for n in names if n.endswith((".pth", ".safetensors", ".fasta", ".csv", ".gz"))]
if stray or bulky or "rnafm_sklearn/py.typed" not in names:
    sys.exit(f"{wheel}: unexpected content {stray + bulky} (or py.typed missing)")
print(f"{wheel}: {len(names)} files, package only")
