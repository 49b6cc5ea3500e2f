#!/usr/bin/env python3
"""DPoP interop fixtures made by an independent implementation (jwcrypto + cryptography).

Writes interop.json next to this script: an issuer's public JWK set, and cases of an
access token (signed by the issuer, bound with cnf.jkt computed by jwcrypto's RFC 7638
thumbprint) with a DPoP proof (signed by jwcrypto with the client key; ath computed with
hashlib). tests/dpop_interop.rs replays every case through the crate's layer, so that our
thumbprints, ath values and proof signatures are checked against another implementation.

Regenerate:  pip install jwcrypto==1.6.1  &&  python3 tests/data/dpop/gen_interop.py
Signatures change on every run (ECDSA and PSS are randomized); everything else is fixed.
"""
import base64
import hashlib
import json
import os

import cryptography
import jwcrypto
from jwcrypto import jwk, jws
from jwcrypto.common import json_encode
from importlib.metadata import version

NOW = 1767225600  # 2026-01-01T00:00:00Z
ISSUER = "https://issuer.example"
AUDIENCE = "api"
URL = "https://api.example.com/items"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(key: jwk.JWK, alg: str, header: dict, claims: dict) -> str:
    token = jws.JWS(json_encode(claims).encode())
    token.add_signature(key, alg=alg, protected=json_encode(header))
    return token.serialize(compact=True)


def unsigned(header: dict, claims: dict) -> str:
    return b64(json_encode(header).encode()) + "." + b64(json_encode(claims).encode()) + "."


def ath(token: str) -> str:
    return b64(hashlib.sha256(token.encode("ascii")).digest())


issuer_rsa = jwk.JWK.generate(kty="RSA", size=2048, kid="rs256", alg="RS256", use="sig")
issuer_ec = jwk.JWK.generate(kty="EC", crv="P-256", kid="es256", alg="ES256", use="sig")


def access_token(jkt, jti, subject="interop"):
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "iat": NOW,
        "exp": NOW + 3600,
        "jti": jti,
        "scope": "items:read",
    }
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    return sign(issuer_rsa, "RS256", {"alg": "RS256", "kid": "rs256", "typ": "at+jwt"}, claims)


def client_key(kty, **kw):
    return jwk.JWK.generate(kty=kty, **kw)


def public(key):
    if key.get("kty") == "oct":
        # A symmetric key has no public half: the attack puts the secret itself in jwk.
        return json.loads(key.export())
    return json.loads(key.export_public())


cases = []


def case(name, valid, why, *, key, alg, token, method="GET", url=URL, header=None, claims=None, raw=None):
    proof_header = {"typ": "dpop+jwt", "alg": alg, "jwk": public(key)}
    proof_header.update(header or {})
    proof_claims = {"jti": "proof-" + name, "htm": "GET", "htu": URL, "iat": NOW, "ath": ath(token)}
    proof_claims.update(claims or {})
    proof_claims = {k: v for k, v in proof_claims.items() if v is not None}
    proof = raw if raw is not None else sign(key, alg, proof_header, proof_claims)
    cases.append({
        "name": name,
        "valid": valid,
        "why": why,
        "scheme": "DPoP",
        "method": method,
        "url": url,
        "access_token": token,
        "dpop": proof,
        "client_jwk": public(key),
        "expected_jkt": key.thumbprint(),
        "expected_ath": ath(token),
    })


for name, alg, kty, kw in [
    ("es256", "ES256", "EC", {"crv": "P-256"}),
    ("es384", "ES384", "EC", {"crv": "P-384"}),
    ("rs256", "RS256", "RSA", {"size": 2048}),
    ("ps256", "PS256", "RSA", {"size": 2048}),
    ("eddsa", "EdDSA", "OKP", {"crv": "Ed25519"}),
]:
    key = client_key(kty, **kw)
    token = access_token(key.thumbprint(), "at-" + name)
    case(name + "-valid", True, "a proof by this key for this token and request", key=key, alg=alg, token=token)

key = client_key("EC", crv="P-256")
token = access_token(key.thumbprint(), "at-main")
other = client_key("EC", crv="P-256")
other_token = access_token(other.thumbprint(), "at-other")
case("query-in-request", True, "the request has a query; htu has none (RFC 9449 4.3)",
     key=key, alg="ES256", token=token, url=URL + "?page=2")
case("htu-not-normalised", True, "RFC 3986 normalisation: scheme and host case, default port",
     key=key, alg="ES256", token=token, claims={"htu": "HTTPS://API.EXAMPLE.COM:443/items"})
case("jkt-mismatch", False, "the token is bound to another key",
     key=key, alg="ES256", token=other_token)
case("ath-of-another-token", False, "ath names another token",
     key=key, alg="ES256", token=token, claims={"ath": ath(other_token)})
case("htm-post", False, "htm POST for a GET request", key=key, alg="ES256", token=token, claims={"htm": "POST"})
case("htu-other-path", False, "htu names another path",
     key=key, alg="ES256", token=token, claims={"htu": "https://api.example.com/other"})
case("htu-with-query", False, "htu carries a query",
     key=key, alg="ES256", token=token, claims={"htu": URL + "?page=2"})
case("iat-old", False, "iat ten minutes before now", key=key, alg="ES256", token=token, claims={"iat": NOW - 600})
case("typ-jwt", False, "typ is JWT", key=key, alg="ES256", token=token, header={"typ": "JWT"})
private_jwk = json.loads(key.export_private())
case("private-jwk", False, "the header's jwk carries the private d",
     key=key, alg="ES256", token=token, header={"jwk": private_jwk})
hmac = jwk.JWK.generate(kty="oct", size=256)
case("hs256", False, "an HMAC proof (jwk is a symmetric key)", key=hmac, alg="HS256", token=token)
case("alg-none", False, "an unsigned proof",
     key=key, alg="ES256", token=token,
     raw=unsigned({"typ": "dpop+jwt", "alg": "none", "jwk": public(key)},
                  {"jti": "proof-none", "htm": "GET", "htu": URL, "iat": NOW, "ath": ath(token)}))
case("no-ath", False, "the proof has no ath", key=key, alg="ES256", token=token, claims={"ath": None})
unbound = access_token(None, "at-unbound")
case("unbound-token", False, "a token without cnf presented with the DPoP scheme", key=key, alg="ES256", token=unbound)

# RFC 7638 section 3.1: the example key and its thumbprint, computed by jwcrypto.
rfc_key = jwk.JWK(**{
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
})
rfc_thumbprint = rfc_key.thumbprint()
assert rfc_thumbprint == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs", rfc_thumbprint

out = {
    "generator": "jwcrypto %s, cryptography %s" % (version("jwcrypto"), cryptography.__version__),
    "issuer": ISSUER,
    "audience": AUDIENCE,
    "origin": "https://api.example.com",
    "now": NOW,
    "issuer_jwks": {"keys": [json.loads(issuer_rsa.export_public()), json.loads(issuer_ec.export_public())]},
    "cases": cases,
    "rfc7638_example": {"jwk": json.loads(rfc_key.export_public()), "thumbprint": rfc_thumbprint},
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "interop.json")
with open(path, "w") as f:
    json.dump(out, f, indent=2, sort_keys=True)
    f.write("\n")
print("wrote %d cases to %s" % (len(cases), path))
