"""Plivo's V3 signature: known vectors, the SDK's own check, rotation, and every way to fail."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence

import plivo.utils
import pytest
from plivo.utils.signature_v3 import construct_get_url, construct_post_url
from starlette.datastructures import Headers

from callstatus.core.plivo import RETRY_FRAGMENT
from callstatus.receiver.signatures import SignatureError, sign, string_to_sign, verify

TOKEN = "my_auth_token"
NONCE = "12345678901234567890"
URL = "https://hooks.example.com/plivo/hangup"
Body = Mapping[str, Sequence[str]]


def test_worked_example_from_the_docs() -> None:
    url = "https://hooks.example.com/plivo/hangup?tenant=acme"
    body = {"CallUUID": ["abc"], "Duration": ["42"]}
    assert string_to_sign("POST", url, body, NONCE) == (
        "https://hooks.example.com/plivo/hangup?tenant=acme.CallUUIDabcDuration42." + NONCE
    )
    assert sign("POST", url, body, NONCE, TOKEN) == "T8/kO8nDtgrkMMi3qdy1qcn7JoAI/0U/icQftBeEXCg="


# (method, URL as Plivo called it, body fields, the text signed before ".<nonce>")
VECTORS: list[tuple[str, str, Body, str]] = [
    # GET: every parameter is in the query, sorted, as k=v joined by &
    ("GET", f"{URL}?To=2&From=1&CallUUID=abc", {}, f"{URL}?CallUUID=abc&From=1&To=2"),
    ("GET", URL, {}, URL),
    ("GET", f"{URL}?B=2&A=2&A=1", {}, f"{URL}?A=1&A=2&B=2"),
    ("GET", f"{URL}?Name=Jos%C3%A9&City=S%C3%A3o+Paulo", {}, f"{URL}?City=São Paulo&Name=José"),
    ("GET", f"{URL}?Empty=&X=1", {}, f"{URL}?Empty=&X=1"),
    ("GET", f"{URL}?b=1&B=2&a=3", {}, f"{URL}?B=2&a=3&b=1"),
    ("GET", f"{URL}?X=a%26b%3Dc", {}, f"{URL}?X=a&b=c"),
    # POST: the URL's own query first (k=v&...), a dot, then the body as kv pairs, sorted
    ("POST", URL, {"Duration": ["42"], "CallUUID": ["abc"]}, f"{URL}?CallUUIDabcDuration42"),
    ("POST", f"{URL}?tenant=acme&env=prod", {"A": ["1"]}, f"{URL}?env=prod&tenant=acme.A1"),
    ("POST", URL, {}, URL),
    ("POST", f"{URL}?tenant=acme", {}, f"{URL}?tenant=acme"),
    ("POST", URL, {"A": ["2", "1"], "B": ["x"]}, f"{URL}?A1A2Bx"),
    ("POST", URL, {"CallerName": ["José Ñúñez"], "To": ["ü"]}, f"{URL}?CallerNameJosé ÑúñezToü"),
    ("POST", URL, {"AnswerTime": [""], "B": ["1"]}, f"{URL}?AnswerTimeB1"),
    ("POST", f"{URL}?blank=", {"A": ["1"]}, f"{URL}?blank=.A1"),
    ("POST", URL, {"b": ["1"], "B": ["2"]}, f"{URL}?B2b1"),
    # scheme, host, port and path are signed as called; a fragment never is
    (
        "POST",
        "http://127.0.0.1:8080/plivo/ring",
        {"A": ["1"]},
        "http://127.0.0.1:8080/plivo/ring?A1",
    ),
    ("POST", f"{URL}?t=1#ct=2000&rt=3000", {"A": ["1"]}, f"{URL}?t=1.A1"),
]


@pytest.mark.parametrize(("method", "url", "body", "signed"), VECTORS)
def test_string_to_sign_vectors(method: str, url: str, body: Body, signed: str) -> None:
    assert string_to_sign(method, url, body, NONCE) == f"{signed}.{NONCE}"


def _sdk_params(body: Body) -> dict[str, str | list[str]]:
    return {key: values[0] if len(values) == 1 else list(values) for key, values in body.items()}


SDK_CASES = [
    (method, url, body)
    for method, url, body, _ in VECTORS
    if url.isascii() and "%C3" not in url and "#" not in url
]


@pytest.mark.parametrize(("method", "url", "body"), SDK_CASES)
def test_agrees_with_the_plivo_sdk(method: str, url: str, body: Body) -> None:
    ours = sign(method, url, body, NONCE, TOKEN)
    assert plivo.utils.validate_v3_signature(method, url, NONCE, TOKEN, ours, _sdk_params(body)), (
        method,
        url,
        body,
    )
    assert not plivo.utils.validate_v3_signature(
        method, url, NONCE, "another-token", ours, _sdk_params(body)
    )


# Plivo's docs do not say how a URL's fragment (its per-URL retry settings) is signed. A fragment
# is never sent over HTTP, and the SDK's validate_v3_signature drops it from the URI it is
# handed: so Plivo signs the URL without it, or no SDK user with a fragment would verify.
DIAL_FIELDS = {"CallUUID": ["abc"], "DialStatus": ["completed"]}
FRAGMENT_CASES: list[tuple[str, str, Body]] = [
    ("POST", URL, DIAL_FIELDS),
    ("POST", f"{URL}?tenant=acme", DIAL_FIELDS),
    ("POST", URL, {}),
    ("POST", f"{URL}?tenant=acme", {}),
    ("GET", f"{URL}?CallUUID=abc&DialStatus=completed", {}),
    ("GET", URL, {}),
]


@pytest.mark.parametrize(("method", "url", "body"), FRAGMENT_CASES)
def test_the_sdk_drops_the_fragment_of_the_uri_it_is_handed(
    method: str, url: str, body: Body
) -> None:
    # Pinned so that an SDK which starts signing fragments is noticed here.
    construct = construct_get_url if method == "GET" else construct_post_url
    with_fragment = construct(url + RETRY_FRAGMENT, _sdk_params(body))
    assert with_fragment == construct(url, _sdk_params(body))
    assert b"#" not in with_fragment
    # Ours signs the same text, fragment or not.
    signed = with_fragment.decode() + f".{NONCE}"
    assert string_to_sign(method, url + RETRY_FRAGMENT, body, NONCE) == signed
    assert string_to_sign(method, url, body, NONCE) == signed


@pytest.mark.parametrize(("method", "url", "body"), FRAGMENT_CASES)
def test_a_signature_for_the_url_without_fragment_verifies_with_it(
    method: str, url: str, body: Body
) -> None:
    good = sign(method, url, body, NONCE, TOKEN)
    for uri in (url, url + RETRY_FRAGMENT):
        assert plivo.utils.validate_v3_signature(method, uri, NONCE, TOKEN, good, _sdk_params(body))
        verify(method, uri, body, _headers(good), [TOKEN])
    # A signature over a text that kept the fragment is no Plivo signature, to the SDK or to us.
    covered = string_to_sign(method, url, body, NONCE).replace(URL, URL + RETRY_FRAGMENT, 1)
    digest = hmac.digest(TOKEN.encode(), covered.encode(), hashlib.sha256)
    forged = base64.b64encode(digest).decode()
    assert forged != good
    assert not plivo.utils.validate_v3_signature(
        method, url + RETRY_FRAGMENT, NONCE, TOKEN, forged, _sdk_params(body)
    )
    with pytest.raises(SignatureError):
        verify(method, url + RETRY_FRAGMENT, body, _headers(forged), [TOKEN])


def test_the_sdk_raises_on_non_ascii_queries_but_we_sign_them() -> None:
    # The SDK's quirk: it parses the query as ASCII bytes. Plivo percent-encodes what it sends,
    # and a UTF-8 value must still verify here.
    url = f"{URL}?Name=Jos%C3%A9"
    with pytest.raises(UnicodeError):
        plivo.utils.validate_v3_signature("GET", url, NONCE, TOKEN, "x", {})
    headers = _headers(sign("GET", url, {}, NONCE, TOKEN))
    verify("GET", url, {}, headers, [TOKEN])


def _headers(v3: str | None = None, nonce: str | None = NONCE, ma_v3: str | None = None) -> Headers:
    raw: dict[str, str] = {}
    if v3 is not None:
        raw["X-Plivo-Signature-V3"] = v3
    if ma_v3 is not None:
        raw["X-Plivo-Signature-Ma-V3"] = ma_v3
    if nonce is not None:
        raw["X-Plivo-Signature-V3-Nonce"] = nonce
    return Headers(headers=raw)


BODY = {"CallUUID": ["abc"], "Duration": ["42"]}
GOOD = sign("POST", URL, BODY, NONCE, TOKEN)
OTHER = sign("POST", URL, BODY, NONCE, "some-other-token")


@pytest.mark.parametrize(
    ("headers", "tokens"),
    [
        pytest.param(_headers(GOOD), [TOKEN], id="v3"),
        pytest.param(_headers(GOOD), ["old-token", TOKEN], id="rotation-new-second"),
        pytest.param(_headers(GOOD), [TOKEN, "next-token"], id="rotation-new-first"),
        pytest.param(_headers(f"{OTHER},{GOOD}"), [TOKEN], id="several-in-v3"),
        pytest.param(_headers(f"{OTHER} , {GOOD} "), [TOKEN], id="several-with-spaces"),
        pytest.param(_headers(ma_v3=GOOD), [TOKEN], id="ma-v3-alone"),
        pytest.param(_headers(OTHER, ma_v3=GOOD), ["main-token", TOKEN], id="v3-wrong-ma-v3-right"),
        pytest.param(_headers(GOOD, ma_v3=OTHER), [TOKEN], id="v3-right-ma-v3-wrong"),
    ],
)
def test_valid_signatures_verify(headers: Headers, tokens: list[str]) -> None:
    verify("POST", URL, BODY, headers, tokens)


def test_lowercase_header_names_are_found() -> None:
    headers = Headers(
        raw=[
            (b"x-plivo-signature-v3", GOOD.encode()),
            (b"x-plivo-signature-v3-nonce", NONCE.encode()),
        ]
    )
    verify("POST", URL, BODY, headers, [TOKEN])


@pytest.mark.parametrize(
    ("method", "url", "body", "headers", "tokens", "reason"),
    [
        pytest.param(
            "POST",
            URL,
            BODY,
            _headers(GOOD, nonce=None),
            [TOKEN],
            "missing_signature",
            id="no-nonce",
        ),
        pytest.param(
            "POST",
            URL,
            BODY,
            _headers(GOOD, nonce=""),
            [TOKEN],
            "missing_signature",
            id="empty-nonce",
        ),
        pytest.param("POST", URL, BODY, _headers(), [TOKEN], "missing_signature", id="no-header"),
        pytest.param(
            "POST", URL, BODY, _headers(" , "), [TOKEN], "missing_signature", id="blank-header"
        ),
        pytest.param(
            "POST",
            URL,
            {"CallUUID": ["abc"], "Duration": ["43"]},
            _headers(GOOD),
            [TOKEN],
            "bad_signature",
            id="tampered-param",
        ),
        pytest.param(
            "POST",
            URL,
            {**BODY, "Extra": ["1"]},
            _headers(GOOD),
            [TOKEN],
            "bad_signature",
            id="added-param",
        ),
        pytest.param(
            "POST",
            URL,
            {"CallUUID": ["abc"]},
            _headers(GOOD),
            [TOKEN],
            "bad_signature",
            id="removed-param",
        ),
        pytest.param(
            "POST",
            URL.replace("hooks.", "evil."),
            BODY,
            _headers(GOOD),
            [TOKEN],
            "bad_signature",
            id="wrong-host",
        ),
        pytest.param(
            "POST",
            URL.replace("https", "http"),
            BODY,
            _headers(GOOD),
            [TOKEN],
            "bad_signature",
            id="wrong-scheme",
        ),
        pytest.param(
            "POST",
            URL.replace("hangup", "ring"),
            BODY,
            _headers(GOOD),
            [TOKEN],
            "bad_signature",
            id="wrong-path",
        ),
        pytest.param(
            "POST", URL + "?x=1", BODY, _headers(GOOD), [TOKEN], "bad_signature", id="added-query"
        ),
        pytest.param("GET", URL, BODY, _headers(GOOD), [TOKEN], "bad_signature", id="wrong-method"),
        pytest.param(
            "POST", URL, BODY, _headers(GOOD, nonce="1"), [TOKEN], "bad_signature", id="wrong-nonce"
        ),
        pytest.param(
            "POST",
            URL,
            BODY,
            _headers(GOOD),
            ["not-it", "nor-this"],
            "bad_signature",
            id="wrong-tokens",
        ),
        pytest.param(
            "POST",
            URL,
            BODY,
            _headers(OTHER, ma_v3=OTHER),
            [TOKEN],
            "bad_signature",
            id="both-headers-wrong",
        ),
        pytest.param(
            "POST", URL, BODY, _headers(GOOD[:-2]), [TOKEN], "bad_signature", id="truncated"
        ),
        pytest.param(
            "POST", URL, BODY, _headers(GOOD.lower()), [TOKEN], "bad_signature", id="case-changed"
        ),
        # Header values are latin-1 text: a non-ASCII byte must be a refusal, not a crash.
        pytest.param(
            "POST",
            URL,
            BODY,
            _headers("ÿ" + GOOD[1:]),
            [TOKEN],
            "bad_signature",
            id="non-ascii-signature",
        ),
        pytest.param(
            "POST",
            URL,
            BODY,
            _headers(GOOD, nonce="nöñce"),
            [TOKEN],
            "bad_signature",
            id="non-ascii-nonce",
        ),
    ],
)
def test_invalid_signatures_are_refused(
    method: str, url: str, body: Body, headers: Headers, tokens: list[str], reason: str
) -> None:
    with pytest.raises(SignatureError) as refused:
        verify(method, url, body, headers, tokens)
    assert refused.value.reason == reason
    assert str(refused.value)


def test_signature_headers_are_bounded_before_any_hmac() -> None:
    import time

    tokens = [f"token-{i}" for i in range(10)]
    # The most a real request carries: MAX_SIGNATURES of them, the good one last.
    verify("POST", URL, BODY, _headers(",".join([OTHER] * 15 + [GOOD])), [*tokens, TOKEN])
    forged = {
        "16 MB of commas": _headers("A," * 8_000_000),
        "17 signatures": _headers(",".join([OTHER] * 16 + [GOOD])),
        "a signature over 1 KiB": _headers(GOOD + " " * 1024),
        "Ma-V3 over 1 KiB": _headers(GOOD, ma_v3="A" * 2000),
        "a nonce over 256": _headers(GOOD, nonce="1" * 257),
    }
    for name, headers in forged.items():
        started = time.perf_counter()
        with pytest.raises(SignatureError) as refused:
            verify("POST", URL, BODY, headers, [*tokens, TOKEN])
        assert time.perf_counter() - started < 0.1, name
        assert refused.value.reason == "bad_signature", name
