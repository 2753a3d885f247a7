import pytest

from kombo_sync.kombo.signatures import sign, verify

BODY = b'{"id":"evt_1","type":"assessment:order-received","data":{}}'
SECRET = "whsec_test_secret"
# HMAC-SHA256(BODY, SECRET) in base64url without padding; standard base64 would have '+' '/' and a '='.
EXPECTED = "KPESvR3A-hcuNnO2foNH_G88gyNcd2O1xotx4aLQ2dM"


def test_sign_is_hmac_sha256_base64url_without_padding():
    assert sign(BODY, SECRET) == EXPECTED


def test_sign_uses_secret_as_utf8():
    assert sign(BODY, "sécret") != sign(BODY, "secret")
    assert verify(BODY, sign(BODY, "sécret"), ["sécret"])


def test_round_trip():
    assert verify(BODY, sign(BODY, SECRET), [SECRET])


@pytest.mark.parametrize("header", [EXPECTED + "=", f"  {EXPECTED}\n", f" {EXPECTED}= "])
def test_padding_and_whitespace_in_header_are_tolerated(header):
    assert verify(BODY, header, [SECRET])


def test_wrong_secret_is_rejected():
    assert not verify(BODY, EXPECTED, ["other-secret"])


def test_tampered_body_is_rejected():
    assert not verify(BODY.replace(b"evt_1", b"evt_2"), EXPECTED, [SECRET])


def test_reserialised_body_is_rejected():
    # The signature covers the raw bytes; the same JSON with other spacing must not pass.
    assert not verify(b'{"id": "evt_1", "type": "assessment:order-received", "data": {}}', EXPECTED, [SECRET])


@pytest.mark.parametrize("header", [None, "", "   ", "===", "not-a-signature", "ünïcode"])
def test_missing_or_garbage_header_is_rejected(header):
    assert not verify(BODY, header, [SECRET])


def test_no_secret_means_no_match():
    assert not verify(BODY, EXPECTED, [])
    assert not verify(BODY, sign(BODY, "x"), [""])  # an empty secret never matches
    with pytest.raises(ValueError):
        sign(BODY, "")


def test_any_of_several_secrets_matches_for_rotation():
    old, new = "old-secret", "new-secret"
    assert verify(BODY, sign(BODY, old), [new, old])
    assert verify(BODY, sign(BODY, new), [new, old])
    assert not verify(BODY, sign(BODY, "retired"), [new, old])
