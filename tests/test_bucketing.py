"""Bucketing: identical to the flag systems' own clients, sticky, and uniform."""

from __future__ import annotations

import json
import random
import string

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiguard import Bucketing
from aiguard._bucketing import fnv1a32, murmur3_32, positioner

keys = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)


def _rng_keys(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "-_@."
    out = [f"user-{i}" for i in range(200)]
    out += ["".join(rng.choices(alphabet, k=rng.randint(1, 24))) for _ in range(n)]
    out += ["ünïcødé-ключ", "用户-42", "emoji-🙂", "tab\tkey"]
    return out


def test_launchdarkly_matches_the_launchdarkly_sdk() -> None:
    """Positions equal the LaunchDarkly Python SDK's bucket for the same flag, salt and key."""
    from ldclient.context import Context
    from ldclient.impl.evaluator_common import _bucket_context

    position = positioner(Bucketing.LAUNCHDARKLY, "ticket-triage", "s4lt")
    for key in _rng_keys(2000):
        expected = _bucket_context(None, Context.create(key), None, "ticket-triage", "s4lt", None)
        assert position(key) == pytest.approx(expected, abs=1e-15), key


def test_launchdarkly_rollout_membership_matches_a_real_client_evaluation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A LaunchDarkly client with a 30% rollout serves True to exactly the keys we put inside."""
    import ldclient
    from ldclient.config import Config
    from ldclient.integrations import Files

    flag = {
        "key": "ticket-triage",
        "on": True,
        "salt": "ticket-triage",
        "variations": [True, False],
        "fallthrough": {
            "rollout": {
                "variations": [{"variation": 0, "weight": 30000}, {"variation": 1, "weight": 70000}]
            }
        },
        "offVariation": 1,
        "version": 1,
    }
    path = tmp_path / "flags.json"
    path.write_text(json.dumps({"flags": {"ticket-triage": flag}}))
    client = ldclient.LDClient(
        Config(
            "sdk-key",
            update_processor_class=Files.new_data_source(paths=[str(path)]),
            send_events=False,
            diagnostic_opt_out=True,
        )
    )
    try:
        position = positioner(Bucketing.LAUNCHDARKLY, "ticket-triage", "ticket-triage")
        for key in _rng_keys(500):
            ld = client.variation("ticket-triage", ldclient.Context.create(key), False)
            assert ld == (position(key) < 0.30), key
    finally:
        client.close()


def test_unleash_matches_the_unleash_engine() -> None:
    """Membership equals Unleash's own engine (yggdrasil, used by the Python SDK)."""
    from yggdrasil_engine.engine import UnleashEngine

    for rollout in (1, 5, 25, 50, 99):
        engine = UnleashEngine()
        strategy = {"rollout": str(rollout), "stickiness": "userId", "groupId": "ticket-triage"}
        engine.take_state(
            json.dumps(
                {
                    "version": 1,
                    "features": [
                        {
                            "name": "ticket-triage",
                            "enabled": True,
                            "strategies": [{"name": "flexibleRollout", "parameters": strategy}],
                        }
                    ],
                }
            )
        )
        position = positioner(Bucketing.UNLEASH, "ticket-triage", "ticket-triage")
        for key in _rng_keys(300):
            enabled = engine.is_enabled("ticket-triage", {"userId": key}).is_enabled
            assert enabled == (position(key) < rollout / 100), (rollout, key)


def test_growthbook_matches_the_growthbook_sdk() -> None:
    """Positions equal GrowthBook's hash v2, and membership its coverage rule evaluation."""
    from growthbook import GrowthBook
    from growthbook.core import gbhash

    position = positioner(Bucketing.GROWTHBOOK, "ticket-triage", "ticket-triage")
    features = {
        "ticket-triage": {
            "defaultValue": False,
            "rules": [{"force": True, "coverage": 0.37, "hashVersion": 2, "seed": "ticket-triage"}],
        }
    }
    for key in _rng_keys(500):
        assert position(key) == gbhash("ticket-triage", key, 2), key
        gb = GrowthBook(attributes={"id": key}, features=features)
        assert gb.is_on("ticket-triage") == (position(key) < 0.37), key


@given(keys)
def test_murmur3_matches_reference_for_any_text(key: str) -> None:
    """Our MurmurHash3 x86_32 equals mmh3's on any UTF-8 text."""
    import mmh3

    assert murmur3_32(key.encode()) == mmh3.hash(key, signed=False)


@given(keys)
def test_growthbook_fnv_matches_for_any_text(key: str) -> None:
    """FNV-1a over UTF-16 code units equals GrowthBook's, non-ASCII included."""
    from growthbook.core import fnv1a32 as gb_fnv

    assert fnv1a32(key) == gb_fnv(key)


@given(
    algorithm=st.sampled_from(list(Bucketing)),
    key=keys.filter(bool),
    percents=st.lists(st.integers(0, 100), min_size=1, max_size=12),
)
def test_membership_is_sticky_under_any_sequence_of_changes(
    algorithm: Bucketing, key: str, percents: list[int]
) -> None:
    """Raising the percentage never moves a unit out; lowering moves out only those above it."""
    position = positioner(algorithm, "f", "f")(key)
    assert 0 <= position < 1
    was_in = None
    previous = None
    for p in percents:
        now_in = position < p / 100
        if previous is not None and was_in is not None:
            if p >= previous and was_in:
                assert now_in  # raising never moves out
            if p <= previous and not was_in:
                assert not now_in  # lowering never moves in
        assert now_in == (position < p / 100)  # same answer every time
        was_in, previous = now_in, p


POSITIONS = {
    algorithm: np.sort(
        np.array(
            [
                positioner(algorithm, "ticket-triage", "ticket-triage")(f"k{i}-{i * 7919}")
                for i in range(100_000)
            ]
        )
    )
    for algorithm in Bucketing
}


@given(algorithm=st.sampled_from(list(Bucketing)), percent=st.floats(0, 100))
def test_share_inside_is_within_half_a_point_of_the_percentage(
    algorithm: Bucketing, percent: float
) -> None:
    """Of 100,000 keys, the share inside an X% rollout is within 0.5 points of X, for any X."""
    if algorithm is Bucketing.UNLEASH:
        percent = float(round(percent))  # Unleash rolls out in whole percents
    if algorithm is Bucketing.GROWTHBOOK:
        percent = round(percent, 2)
    share = np.searchsorted(POSITIONS[algorithm], percent / 100, side="left") / 100_000
    assert abs(100 * share - percent) <= 0.5
