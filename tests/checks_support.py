"""What the tests of minigpt_lib.checks share: the global random state stays untouched, and a passing check
prints exactly one line."""

import pytest
import torch


@pytest.fixture(autouse=True)
def global_rng_untouched():
    """No check may consume or reset the global random state (autouse wherever it is imported)."""
    torch.manual_seed(2024)
    before = torch.random.get_rng_state()
    yield
    assert torch.equal(before, torch.random.get_rng_state())


def passes(check, implementation, capsys, what: str) -> None:
    """Run a check that must succeed and print exactly one ✓ line."""
    assert check(implementation) is None
    assert capsys.readouterr().out == f"✓ {what} matches the reference\n"
