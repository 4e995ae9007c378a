"""The re-cut (issue 18) keeps behaviour: fixed-seed CLI runs match the reference made before it.

See ``tests/golden/golden_run.py`` for the scenario and what is compared (bitwise arrays, CSV and
tensors; result numbers of the JSON files to 1e-6).
"""

from __future__ import annotations

import json

import pytest

from golden.golden_run import REFERENCE, differences, machine, run

pytestmark = pytest.mark.slow


def test_outputs_match_the_reference(tmp_path):
    ref = json.loads(REFERENCE.read_text())
    here = machine()
    if {k: here[k] for k in ("torch", "cpu_capability", "machine")} != \
            {k: ref["machine"][k] for k in ("torch", "cpu_capability", "machine")}:
        pytest.skip(f"reference made on {ref['machine']}, this machine is {here}: floating-point kernels differ; "
                    "regenerate with tests/golden/golden_run.py --write on a known-good commit")
    diffs = differences(ref["outputs"], run(tmp_path))
    assert not diffs, "outputs differ from the golden reference:\n" + "\n".join(diffs[:40])
