"""Native nftables layouts recorded afresh against this kernel, explained and simulated: same checks as
the fixtures' (tests/nft/test_native_captures.py, test_native_simulate.py), so the fixtures cannot
drift from what kernels do."""

from __future__ import annotations

import pytest

from tests.nft import native_record
from tests.nft.test_native_captures import FORMS, TRACES, check_capture, usable
from tests.nft.test_native_simulate import check_simulation

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("sc", list(native_record.SCENARIOS))
def test_fresh_native_capture_is_explained_and_simulated_as_the_kernel_did(kernel_lab, tmp_path, sc):
    d = tmp_path / sc
    native_record.record(sc, d)
    for form, files in FORMS.items():
        for trace in TRACES:  # xtables-monitor --trace too: what it prints for native tables' rules
            if usable(d, form, trace):
                check_capture(d, [str(d / f) for f in files], str(d / trace))
    check_simulation(d)
