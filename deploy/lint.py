"""`make deploy-lint`: checkov (pinned, offline: --skip-download) over the Dockerfiles, the Kubernetes manifests
and the pods KServe makes from the InferenceServices (rendered by deploy/kserve_pods.py), with the reviewed skip
list deploy/checkov-skips.txt (every skip carries its reason). Exit 0 only when no check fails.

    python deploy/lint.py CHECKOV      # CHECKOV: the checkov executable (.venv-checkov/bin/checkov)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPS = ROOT / "deploy" / "checkov-skips.txt"
KSERVE_PODS = ROOT / "build" / "kserve-pods"
TARGETS = {
    "Dockerfiles": ["--framework", "dockerfile", "-f", "Dockerfile", "-f", "deploy/balancer/Dockerfile"],
    "Kubernetes manifests": ["--framework", "kubernetes", "-d", "deploy/k8s"],
    "KServe pods": ["--framework", "kubernetes", "-d", str(KSERVE_PODS.relative_to(ROOT))],
}


def reviewed_skips(path: Path = SKIPS) -> dict[str, str]:
    """CHECK_ID -> reason; raises ValueError for a line without a reason."""
    skips = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        check, _, reason = line.partition(" ")
        if not check.startswith("CKV") or len(reason.strip()) < 20:
            raise ValueError(f"{path.name} line {number}: a skip is CHECK_ID followed by its reason")
        skips[check] = reason.strip()
    return skips


def run_checkov(checkov: str, args: list[str], skips: dict[str, str]) -> list[str]:
    """The failed checks of one checkov run, as 'CHECK_ID file:lines (resource)'."""
    command = [checkov, "--skip-download", "--quiet", "--compact", "-o", "json", *args]
    command += ["--skip-check", ",".join(sorted(skips))]
    # No network: no policy download (--skip-download, BC_SKIP_MAPPING) and no PyPI version check.
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode not in (0, 1):
        raise SystemExit(f"deploy-lint: checkov failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    reports = json.loads(done.stdout)
    failures = []
    for report in reports if isinstance(reports, list) else [reports]:
        summary = report.get("summary", {})
        print(
            f"  {report.get('check_type')}: passed {summary.get('passed')}, failed {summary.get('failed')}, "
            f"skipped {summary.get('skipped')}"
        )
        for failed in report.get("results", {}).get("failed_checks", []):
            lines = "-".join(map(str, failed["file_line_range"]))
            failures.append(
                f"{failed['check_id']} {failed['file_path']}:{lines} ({failed['resource']}): {failed['check_name']}"
            )
    return failures


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    skips = reviewed_skips()
    subprocess.run([sys.executable, str(ROOT / "deploy" / "kserve_pods.py"), str(KSERVE_PODS)], check=True)
    failures = []
    for name, args in TARGETS.items():
        print(f"deploy-lint: {name}")
        failures += run_checkov(argv[0], args, skips)
    for check, reason in skips.items():
        print(f"deploy-lint: skipped {check}: {reason}")
    for failure in failures:
        print(f"deploy-lint: FAILED {failure}")
    print(f"deploy-lint: {len(failures)} failed checks" + ("" if failures else " (all passed)"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
