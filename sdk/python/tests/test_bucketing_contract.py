"""Sticky bucketing and percent conversion against ``contracts/bucketing.json``."""

from __future__ import annotations

from decimal import Decimal

import mmh3
import pytest

from shipway.bucketing import (
    InvalidPercent,
    basis_points_to_percent,
    bucket,
    in_canary,
    percent_to_basis_points,
)
from shipway.evaluation import evaluate_feature

DISTRIBUTION_KEYS = [f"user-{i}" for i in range(100_000)]


def test_bucket__every_contract_vector__matches(bucketing_contract):
    vectors = bucketing_contract["vectors"]
    assert vectors
    got = [bucket(v["salt"], v["targeting_key"]) for v in vectors]
    assert got == [v["bucket"] for v in vectors]


def test_bucket__nfc_and_nfd_forms__are_not_normalised(bucketing_contract):
    unicode_vectors = [v for v in bucketing_contract["vectors"] if "note" in v]
    assert unicode_vectors, "the contract should carry the NFD vector"
    for vector in unicode_vectors:
        assert bucket(vector["salt"], vector["targeting_key"]) == vector["bucket"]


def test_bucket__distribution_check__counts_exactly_as_given(bucketing_contract):
    check = bucketing_contract["distribution_check"]
    assert check["keys"] == "user-0 .. user-99999"
    buckets = [bucket(check["salt"], key) for key in DISTRIBUTION_KEYS]
    for percent, expected in check["in_canary_count_by_percent"].items():
        basis_points = percent_to_basis_points(percent)
        assert sum(1 for b in buckets if b < basis_points) == expected, percent


@pytest.mark.parametrize("percent", ["1", "5", "10", "25", "50"])
def test_in_canary__raising_the_percentage__never_moves_a_user_out(percent):
    lower = percent_to_basis_points(percent)
    for key in DISTRIBUTION_KEYS[:20_000]:
        if in_canary("ticket-summarizer", key, lower):
            for higher in (lower + 1, lower * 2, 10_000):
                assert in_canary("ticket-summarizer", key, higher)


def test_bucket__is_unsigned_murmur3_of_salt_colon_key_mod_10000():
    data = b"ticket-summarizer:user-42"
    assert (
        bucket("ticket-summarizer", "user-42")
        == mmh3.hash(data, 0, signed=False) % 10_000
    )
    assert 0 <= bucket("s", "k") < 10_000


def test_percent_to_basis_points__contract_vectors__convert_exactly(bucketing_contract):
    for vector in bucketing_contract["percent_vectors"]:
        assert percent_to_basis_points(vector["percent"]) == vector["basis_points"]


def test_percent_to_basis_points__contract_refusals__raise_invalid_percent(
    bucketing_contract,
):
    for text in bucketing_contract["percent_refused"]:
        with pytest.raises(InvalidPercent, match="at most two decimals"):
            percent_to_basis_points(text)


def test_percent_to_basis_points__refusal_message__quotes_the_input():
    with pytest.raises(InvalidPercent) as info:
        percent_to_basis_points("33.333")
    assert str(info.value) == (
        "percent must be a number between 0 and 100 with at most two decimals, "
        "got '33.333'"
    )


@pytest.mark.parametrize(
    "text",
    [
        " ",
        "   ",
        " 5",
        "5 ",
        "+5",
        "-0",
        "1E2",
        "inf",
        "nan",
        "5.",
        ".5",
        "5,0",
        "1_0",
        "\u0665",
    ],
)
def test_percent_to_basis_points__malformed_text__is_refused(text):
    with pytest.raises(InvalidPercent):
        percent_to_basis_points(text)


@pytest.mark.parametrize("value", [5.0, 0.29, float("nan"), True])
def test_percent_to_basis_points__float_or_bool__is_refused(value):
    with pytest.raises((TypeError, InvalidPercent)):
        percent_to_basis_points(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 500),
        ("5.0", 500),
        ("5.00", 500),
        ("0.29", 29),
        (0, 0),
        (7, 700),
        (100, 10_000),
        (Decimal("0.57"), 57),
        (Decimal("12.5"), 1250),
    ],
)
def test_percent_to_basis_points__valid_input__converts_exactly(value, expected):
    assert percent_to_basis_points(value) == expected


@pytest.mark.parametrize(
    "value", [-1, 101, Decimal("0.001"), Decimal("NaN"), Decimal("100.01")]
)
def test_percent_to_basis_points__out_of_range_int_or_decimal__is_refused(value):
    with pytest.raises(InvalidPercent):
        percent_to_basis_points(value)


@pytest.mark.parametrize(
    ("bp", "text"),
    [
        (0, "0"),
        (1, "0.01"),
        (29, "0.29"),
        (50, "0.5"),
        (500, "5"),
        (3333, "33.33"),
        (1250, "12.5"),
        (10_000, "100"),
    ],
)
def test_basis_points_to_percent__renders_shortest_exact_text(bp, text):
    assert basis_points_to_percent(bp) == text
    assert percent_to_basis_points(text) == bp


def test_basis_points_to_percent__out_of_range__is_refused():
    with pytest.raises(ValueError):
        basis_points_to_percent(10_001)


@pytest.mark.parametrize("context", [{}, {"targetingKey": ""}, {"targetingKey": None}])
def test_split__missing_targeting_key__serves_stable_and_never_hashes(
    context, monkeypatch
):
    from shipway import evaluation

    def refuse_to_hash(*_args):
        raise AssertionError("a split without a targeting key must not hash anything")

    monkeypatch.setattr(evaluation, "bucket", refuse_to_hash)
    feature = {
        "enabled": True,
        "salt": "ticket-summarizer",
        "targeting": [],
        "stable": {"prompt_version": "1.0.0", "template": "a", "model": "m"},
        "canary": {
            "prompt_version": "1.1.0",
            "template": "b",
            "model": "m",
            "basis_points": 500,
        },
    }
    result = evaluate_feature(feature, context)
    assert (result.variant, result.reason, result.error_code) == (
        "stable",
        "ERROR",
        "TARGETING_KEY_MISSING",
    )
