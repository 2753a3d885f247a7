"""The invitation channels are named in four places that must agree: the factory that builds them, the two
settings fields, and the state store's CHECK constraint."""

from __future__ import annotations

import typing

from kombo_sync.invites import CHANNELS
from kombo_sync.settings import IntakeSettings, IntegrationOverrides
from kombo_sync.state.schema import INVITATION_CHANNELS


def _literal_values(model: type, field: str) -> set[str]:
    annotation = model.model_fields[field].annotation  # type: ignore[attr-defined]
    values: set[str] = set()
    pending = [annotation]
    while pending:  # Literal[...] | None, or Literal[...]
        for arg in typing.get_args(pending.pop()):
            if isinstance(arg, str):
                values.add(arg)
            else:
                pending.append(arg)
    return values


def test_every_place_names_the_same_channels():
    assert set(CHANNELS) == set(INVITATION_CHANNELS)
    assert _literal_values(IntakeSettings, "channel") == set(INVITATION_CHANNELS)
    assert _literal_values(IntegrationOverrides, "channel") == set(INVITATION_CHANNELS)
