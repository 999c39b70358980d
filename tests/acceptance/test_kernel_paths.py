"""The blocking numeric checks hold whichever CPU kernels compute them: SmolLM2's attribution and look-up steps
run under other kernel paths than this machine's own, in separate processes: the attribution on the portable
default path with one thread, the look-ups of the same store on this machine's own path and on AVX2 (as when
steps of one store run on different machines; the look-ups' check compares the two). On a machine of another kind the same
test covers other paths; a tolerance set at the edge of one CPU's rounding fails here (docs/quality.md#tolerances)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHAIN = Path(__file__).resolve().parents[1] / "kernel_chain.py"
#: Environment settings that select kernel paths at torch's load (and MKL's); the machine's own is the third.
PATHS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OMP_NUM_THREADS": "2"},
    "default-one-thread": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "OMP_NUM_THREADS": "1"},
    "own": {},
}


def _stage(stage: str, data: Path, path: str, env_base: dict) -> dict:
    env = {k: v for k, v in env_base.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, str(CHAIN), stage, str(data)], env={**env, **PATHS[path]}, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def attributed(tmp_path_factory) -> tuple[Path, dict]:
    """SmolLM2's chain to the head scores, computed on the portable default path with one thread."""
    data = tmp_path_factory.mktemp("kernels") / "data"
    return data, _stage("attribute", data, "default-one-thread", dict(os.environ))


@pytest.mark.parametrize("lookup_on", ["own", "avx2"])
def test_the_identity_checks_pass_across_kernel_paths(attributed, lookup_on):
    data, attribute_report = attributed
    report = _stage("lookup", data, lookup_on, dict(os.environ))
    assert (attribute_report["capability"], attribute_report["threads"]) != (report["capability"], report["threads"])  # two paths, really
    assert report["lookup_rows"] > 1000  # pairs were found and read: the checks saw real rows
    for check in ("attribution_identity", "lookups_identity"):
        assert report[check]["passed"], (check, report[check]["lines"], report[check]["metadata"])
    print(json.dumps({"attribute": attribute_report, "lookup": report}, indent=1))
