"""What the provider unit tests share: the reason a verifier gave for refusing a delivery."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from webhooks_gateway.providers.base import FailureReason, SignatureError


def reason_of(check: Callable[[], object]) -> FailureReason:
    """Run `check`, which must refuse with SignatureError, and return its reason."""
    with pytest.raises(SignatureError) as caught:
        check()
    return caught.value.reason
