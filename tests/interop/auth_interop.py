"""Checks Emporium's auth against independent, standard implementations:
PyJWT verifies an access token using only the OIDC discovery document and
the JWKS it points to, and pyotp produces the TOTP codes.

Usage: python3 auth_interop.py http://127.0.0.1:8080
"""
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

import jwt
import pyotp

BASE = sys.argv[1].rstrip("/")


def call(method, path, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def check(condition, message):
    if not condition:
        print("FAIL:", message)
        sys.exit(1)
    print("ok:", message)


email = f"interop-{uuid.uuid4().hex[:12]}@example.com"
password = "interop passphrase 42"
status, _ = call("POST", "/api/v1/auth/register", {"email": email, "password": password, "name": "Interop"})
check(status == 201, "register")
status, tokens = call("POST", "/api/v1/auth/login", {"email": email, "password": password})
check(status == 200, "login")
access = tokens["access_token"]

status, discovery = call("GET", "/.well-known/openid-configuration")
check(status == 200 and discovery["jwks_uri"].endswith("/.well-known/jwks.json"), "discovery document")
issuer = discovery["issuer"]
# The issuer is the public URL; the test server may listen elsewhere.
jwks_url = BASE + "/.well-known/jwks.json"
signing_key = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(access)
claims = jwt.decode(access, signing_key.key, algorithms=["EdDSA"], audience="emporium", issuer=issuer)
check(claims["sub"].startswith("usr_") and claims["roles"] == ["customer"], "PyJWT verifies the access token")

tampered = access[:-4] + ("AAAA" if not access.endswith("AAAA") else "BBBB")
try:
    jwt.decode(tampered, signing_key.key, algorithms=["EdDSA"], audience="emporium", issuer=issuer)
    check(False, "PyJWT refuses a tampered token")
except jwt.InvalidTokenError:
    check(True, "PyJWT refuses a tampered token")
try:
    jwt.decode(access, signing_key.key, algorithms=["EdDSA"], audience="someone-else", issuer=issuer)
    check(False, "PyJWT refuses the wrong audience")
except jwt.InvalidAudienceError:
    check(True, "PyJWT refuses the wrong audience")

status, body = call("POST", "/api/v1/me/mfa/totp", token=access)
check(status == 403 and body["error"]["code"] == "password_required", "TOTP enrolment needs the password")
status, enrolment = call("POST", "/api/v1/me/mfa/totp", {"password": password}, token=access)
check(status == 200 and enrolment["otpauth_uri"].startswith("otpauth://totp/"), "TOTP enrolment starts")
totp = pyotp.parse_uri(enrolment["otpauth_uri"])
check(totp.secret == enrolment["secret"], "the otpauth URI carries the secret")
status, codes = call("POST", "/api/v1/me/mfa/totp/confirm", {"code": totp.at(time.time() - 30)}, token=access)
check(status == 200 and len(codes["recovery_codes"]) == 10, "pyotp's code confirms enrolment")
status, body = call("POST", "/api/v1/auth/login", {"email": email, "password": password})
check(status == 401 and body["error"]["code"] == "mfa_required", "sign-in now asks for a code")
status, _ = call("POST", "/api/v1/auth/login", {"email": email, "password": password, "totp_code": totp.now()})
check(status == 200, "pyotp's code signs in")
print("interop: all checks passed")
