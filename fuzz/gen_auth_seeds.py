#!/usr/bin/env python3
"""Writes the authentication seeds: tokens (seeds/token/) and client byte
streams carrying connect/refresh/subscribe with tokens (seeds/connection/
auth_*), signed with the secret of `wavecast_core::fuzzing::TOKEN_SECRET`.
core/tests/fuzz_seeds.rs checks that the `valid_*` tokens still verify.

Run from fuzz/: python3 gen_auth_seeds.py
"""
import base64, hashlib, hmac, json, os, struct

SECRET = b"wavecast fuzz token secret 32 b!"
ORIGIN = 1_800_000_000
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(claims, alg="HS256", secret=SECRET, header=None):
    h = header if header is not None else {"alg": alg, "typ": "JWT"}
    signing = b64(json.dumps(h, separators=(",", ":")).encode()) + "." + b64(
        json.dumps(claims, separators=(",", ":")).encode())
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384,
              "HS512": hashlib.sha512}.get(alg, hashlib.sha256)
    sig = hmac.new(secret, signing.encode(), digest).digest()
    return signing + "." + b64(sig)


def frame(payload, opcode=0x1, fin=True):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + MASK + bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))


def cmd(obj):
    return frame(json.dumps(obj, separators=(",", ":")).encode())


def mp_str(s):
    b = s.encode()
    if len(b) < 32:
        return bytes([0xA0 | len(b)]) + b
    if len(b) < 256:
        return b"\xd9" + bytes([len(b)]) + b
    return b"\xda" + struct.pack(">H", len(b)) + b


def mp_map(pairs):
    out = bytes([0x80 | len(pairs)])
    for k, v in pairs:
        out += mp_str(k)
        if isinstance(v, int):
            out += bytes([v]) if v < 128 else b"\xcd" + struct.pack(">H", v)
        elif isinstance(v, str):
            out += mp_str(v)
        else:
            out += mp_map(v)
    return out


def mp_cmd(pairs):
    return frame(mp_map(pairs), opcode=0x2)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


user42 = jwt({"sub": "42", "exp": ORIGIN + 600})
user42_later = jwt({"sub": "42", "exp": ORIGIN + 1200, "iat": ORIGIN})
user7 = jwt({"sub": "7", "exp": ORIGIN + 600})
expired = jwt({"sub": "42", "exp": ORIGIN - 100})
no_exp = jwt({"sub": "42"})
bad_sig = jwt({"sub": "42", "exp": ORIGIN + 600}, secret=b"another secret")
sub_vip = jwt({"sub": "42", "channel": "vip:a", "exp": ORIGIN + 600})
# A key id no key set has (the signature is never checked).
unknown_kid = jwt({"sub": "42", "exp": ORIGIN + 600}, alg="RS256",
                  header={"alg": "RS256", "typ": "JWT", "kid": "k9"})
user42_channels = jwt({"sub": "42", "exp": ORIGIN + 600, "info": {"n": "Ann"},
                       "channels": ["open:a", "vip:a", "news", "open:a"]})
sub_vip_other = jwt({"sub": "7", "channel": "vip:a", "exp": ORIGIN + 600})
sub_vip_expired = jwt({"sub": "42", "channel": "vip:a", "exp": ORIGIN - 60})

tokens = {
    "valid_connection": user42,
    "valid_connection_info": jwt({"sub": "alice", "exp": ORIGIN + 600,
                                  "info": {"name": "Alice", "n": [1, 2.5, None]},
                                  "channels": ["news", "open:x"]}),
    "valid_subscription": sub_vip,
    "valid_hs384": jwt({"sub": "42", "exp": ORIGIN + 60}, alg="HS384"),
    "valid_hs512_kid": jwt({"sub": "42", "exp": ORIGIN + 60},
                           alg="HS512", header={"alg": "HS512", "kid": "k1"}),
    "valid_within_leeway": jwt({"sub": "42", "exp": ORIGIN - 3, "nbf": ORIGIN + 3}),
    "valid_float_exp": jwt({"sub": "42", "exp": ORIGIN + 600.5, "nbf": ORIGIN - 1.5}),
    "valid_aud_iss_ignored": jwt({"sub": "42", "exp": ORIGIN + 600,
                                  "aud": ["x", "y"], "iss": "me"}),
    "expired": expired,
    "subscription_expired": sub_vip_expired,
    "subscription_other_user": sub_vip_other,
    "subscription_other_channel": jwt({"sub": "42", "channel": "vip:b",
                                       "exp": ORIGIN + 600}),
    "not_yet_valid": jwt({"sub": "42", "exp": ORIGIN + 600, "nbf": ORIGIN + 100}),
    "no_exp": no_exp,
    "no_sub": jwt({"exp": ORIGIN + 600}),
    "sub_not_string": jwt({"sub": 42, "exp": ORIGIN + 600}),
    "exp_not_number": jwt({"sub": "42", "exp": "soon"}),
    "exp_negative": jwt({"sub": "42", "exp": -5}),
    "info_too_large": jwt({"sub": "42", "exp": ORIGIN + 600, "info": "x" * 1100}),
    "too_large": jwt({"sub": "42", "exp": ORIGIN + 600, "pad": "p" * 6200}),
    "bad_signature": bad_sig,
    "alg_none": jwt({"sub": "42", "exp": ORIGIN + 600},
                    header={"alg": "none"}).rsplit(".", 1)[0] + ".",
    "alg_rs256": jwt({"sub": "42", "exp": ORIGIN + 600},
                     header={"alg": "RS256"}),
    "header_not_json": b64(b"{alg") + "." + b64(b"{}") + ".c2ln",
    "claims_array": jwt([1, 2, 3]),
    "two_parts": "eyJhbGciOiJIUzI1NiJ9.e30",
    "empty": "",
}
for name, t in tokens.items():
    write(f"seeds/token/{name}", t)

# Byte 0: low 5 bits chunk size - 1, bit 5 every proxy on and keys from a
# key set (asks answered from the input), bit 6 MessagePack, bit 7
# anonymous allowed.
streams = {
    "auth_connect_subscribe": (0x1F, [
        cmd({"id": 1, "connect": {"token": user42}}),
        cmd({"id": 2, "subscribe": {"channel": "news"}}),
        cmd({"id": 3, "subscribe": {"channel": "vip:a", "token": sub_vip}}),
        cmd({"id": 4, "publish": {"channel": "open:x", "data": {"t": "hi"}}}),
        cmd({"id": 5, "presence": {"channel": "vip:a"}}),
        cmd({"id": 6, "history": {"channel": "news", "limit": 5}}),
        cmd({"id": 7, "refresh": {"token": user42_later}}),
        cmd({"id": 8, "unsubscribe": {"channel": "news"}}),
        frame(struct.pack(">H", 1000) + b"bye", opcode=0x8),
    ]),
    "auth_commands_before_connect": (0x0A, [
        cmd({"id": 1, "subscribe": {"channel": "open:x"}}),
        cmd({"id": 2, "refresh": {"token": user42}}),
        cmd({"id": 3, "connect": {"token": expired}}),
        cmd({"id": 4, "connect": {"token": user42}}),
        cmd({"id": 5, "subscribe": {"channel": "open:x"}}),
        cmd({"id": 6, "connect": {"token": user42}}),
    ]),
    "auth_bad_signature": (0x05, [
        cmd({"id": 1, "connect": {"token": bad_sig}}),
        cmd({"id": 2, "subscribe": {"channel": "news"}}),
    ]),
    "auth_refresh_other_user": (0x1F, [
        cmd({"id": 1, "connect": {"token": user42}}),
        cmd({"id": 2, "refresh": {"token": expired}}),
        cmd({"id": 3, "refresh": {"token": user7}}),
    ]),
    "auth_token_types": (0x11, [
        cmd({"id": 1, "connect": {"token": None}}),
        cmd({"id": 2, "connect": {"token": 12}}),
        cmd({"id": 3, "connect": {}}),
        cmd({"id": 4, "connect": {"token": no_exp}}),
    ]),
    "auth_sub_tokens": (0x1F, [
        cmd({"id": 1, "connect": {"token": user42}}),
        cmd({"id": 2, "subscribe": {"channel": "vip:a"}}),
        cmd({"id": 3, "subscribe": {"channel": "vip:a", "token": sub_vip_expired}}),
        cmd({"id": 4, "subscribe": {"channel": "vip:a", "token": sub_vip_other}}),
        cmd({"id": 5, "subscribe": {"channel": "vip:a", "token": user42}}),
        cmd({"id": 6, "subscribe": {"channel": "vip:a", "token": None}}),
        cmd({"id": 7, "subscribe": {"channel": "vip:a", "token": sub_vip}}),
    ]),
    "auth_anonymous_connect": (0x9F, [
        cmd({"id": 1, "connect": {}}),
        cmd({"id": 2, "subscribe": {"channel": "open:x"}}),
        cmd({"id": 3, "subscribe": {"channel": "news"}}),
        cmd({"id": 4, "refresh": {"token": user42}}),
        cmd({"id": 5, "subscribe": {"channel": "vip:a", "token": sub_vip}}),
    ]),
    "auth_anonymous_implicit": (0x83, [
        cmd({"id": 1, "subscribe": {"channel": "open:x"}}),
        cmd({"id": 2, "connect": {"token": user42}}),
        cmd({"id": 3, "publish": {"channel": "open:x", "data": 1}}),
    ]),
    "auth_anonymous_allowed_token": (0x9F, [
        cmd({"id": 1, "connect": {"token": user7}}),
        cmd({"id": 2, "presence": {"channel": "open:x"}}),
    ]),
    "auth_msgpack": (0x5F, [
        mp_cmd([("id", 1), ("connect", [("token", user42)])]),
        mp_cmd([("id", 2), ("subscribe", [("channel", "vip:a"), ("token", sub_vip)])]),
        mp_cmd([("id", 3), ("refresh", [("token", user42_later)])]),
    ]),
    "auth_msgpack_anonymous": (0xDF, [
        mp_cmd([("id", 1), ("connect", [])]),
        mp_cmd([("id", 2), ("subscribe", [("channel", "open:x")])]),
    ]),
    "proxy_connect_pipelined": (0x3F, [
        cmd({"id": 1, "connect": {"data": {"session": "s1"}}}),
        cmd({"id": 2, "subscribe": {"channel": "open:x"}}),
        cmd({"id": 3, "publish": {"channel": "open:x", "data": {"t": "hi"}}}),
        cmd({"id": 4, "subscribe": {"channel": "vip:a", "token": sub_vip}}),
        cmd({"id": 5, "connect": {}}),
    ]),
    "proxy_unknown_kid": (0x25, [
        cmd({"id": 1, "connect": {"token": unknown_kid}}),
        cmd({"id": 2, "subscribe": {"channel": "news"}}),
        cmd({"id": 3, "connect": {"token": user42}}),
        cmd({"id": 4, "subscribe": {"channel": "vip:a", "token": unknown_kid}}),
    ]),
    "proxy_token_beside_proxy": (0x3F, [
        cmd({"id": 1, "connect": {"token": user42_channels}}),
        cmd({"id": 2, "publish": {"channel": "open:a", "data": 1}}),
        cmd({"id": 3, "refresh": {"token": user42_later}}),
    ]),
}
for name, (seed, frames) in streams.items():
    write(f"seeds/connection/{name}", bytes([seed]) + b"".join(frames))
