"""Make the newest `appliance eval` result of each set the committed baseline (`make eval-baseline`).

    python tools/eval_baseline.py RESULTS_DIR BASELINE_DIR

RESULTS_DIR holds ``<date>-<set>.json`` files; BASELINE_DIR gets ``<set>.json``. The items keep
their question and rank (the gate names the questions a change newly misses) but not the
retrieved URIs, which are paths of the machine that measured them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(results: Path, baselines: Path) -> None:
    newest: dict[str, Path] = {}
    for path in sorted(results.glob("*.json")):  # names start with the date: later ones win
        newest[json.loads(path.read_text(encoding="utf-8"))["set"]] = path
    if not newest:
        sys.exit(f"no results in {results}")
    baselines.mkdir(parents=True, exist_ok=True)
    for name, path in sorted(newest.items()):
        report = json.loads(path.read_text(encoding="utf-8"))
        report.pop("gate", None)
        for item in report["items"]:
            item.pop("retrieved", None)
        target = baselines / f"{name}.json"
        target.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"{target}: {report['retrieval']}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
