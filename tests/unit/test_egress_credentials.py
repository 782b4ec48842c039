"""Credentials for egress: the ``credentials:`` model and the file-based kinds at run time.

What a user notices: each kind puts the right header on the outbound request; a bad block is
refused at load with the field and the fix; a rotated Secret (Kubernetes swaps a ``..data``
symlink) is used at the next request with no restart; a file that breaks fails closed with a
reason logged once; no secret ever shows in a message, a log line or the config dump.
The file kinds never wait, so their coroutines are driven here without an event loop.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sidegate.config.egress_credential_spec import CredentialSettings, compile_credentials
from sidegate.config.egress_credentials import CredentialsSpec
from sidegate.config.redact import redact
from sidegate.egress.credentials import (
    CHECK_INTERVAL,
    Credential,
    CredentialUnavailableError,
    credential_for,
    with_credential,
)
from sidegate.egress.oauth import TokenError, parse_token_response

SECRET = "s3cr3t-value-that-must-never-be-logged"


def run(coro: Coroutine[Any, Any, tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    """The result of a coroutine that never waits (the file kinds')."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("the coroutine waited")


class Clock:
    """The time the credentials see: tests step it past the once-a-second file check."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += CHECK_INTERVAL


def header_of(credential: Credential) -> tuple[bytes, bytes]:
    return run(credential.header())


def secret(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value)
    return str(path)


def spec(**block: Any) -> CredentialSettings:
    """A ``credentials:`` block checked by the model, then compiled as the serving process gets it."""
    checked = CredentialsSpec.model_validate({"name": "partner", **block})
    return compile_credentials(checked.model_dump())


# -- each kind's header ----------------------------------------------------------------------


def test_bearer_token_from_a_file_with_its_newline_dropped(tmp_path: Path) -> None:
    credential = credential_for(spec(bearer={"token_file": secret(tmp_path, "token", SECRET + "\n")}))
    assert credential.name == "partner"
    assert header_of(credential) == (b"Authorization", b"Bearer " + SECRET.encode())


def test_api_key_in_the_configured_header(tmp_path: Path) -> None:
    block = {"header": "X-Api-Key", "value_file": secret(tmp_path, "key", f"  {SECRET}\n")}
    assert header_of(credential_for(spec(api_key=block))) == (b"X-Api-Key", SECRET.encode())


def test_basic_with_an_inline_username(tmp_path: Path) -> None:
    block = {"username": "svc-orders", "password_file": secret(tmp_path, "password", SECRET)}
    name, value = header_of(credential_for(spec(basic=block)))
    assert name == b"Authorization"
    assert value == b"Basic " + base64.b64encode(f"svc-orders:{SECRET}".encode())


def test_basic_with_the_username_in_a_file(tmp_path: Path) -> None:
    block = {
        "username_file": secret(tmp_path, "user", "alice\n"),
        "password_file": secret(tmp_path, "pw", "pa:ss"),
    }
    _, value = header_of(credential_for(spec(basic=block)))
    assert base64.b64decode(value.removeprefix(b"Basic ")) == b"alice:pa:ss"  # ':' allowed in the password


# -- rotation: a Kubernetes Secret volume ---------------------------------------------------


def kubernetes_secret(directory: Path, version: str, files: dict[str, str]) -> None:
    """Lay out (or rotate) a Secret volume as the kubelet does: ``..<version>/`` with the files,
    ``..data`` a symlink to it swapped atomically, and each key a symlink through ``..data``."""
    directory.mkdir(exist_ok=True)
    target = directory / f"..{version}"
    target.mkdir()
    for key, value in files.items():
        (target / key).write_text(value)
        if not (directory / key).is_symlink():
            (directory / key).symlink_to(f"..data/{key}")
    staging = directory / "..data_tmp"
    staging.symlink_to(target.name)
    os.replace(staging, directory / "..data")


def test_a_rotated_secret_is_used_within_a_second(tmp_path: Path) -> None:
    volume = tmp_path / "partner"
    kubernetes_secret(volume, "2026_12_08_00_00_00.1", {"token": "first-token"})
    clock = Clock()
    credential = credential_for(spec(bearer={"token_file": str(volume / "token")}), clock=clock)
    assert header_of(credential) == (b"Authorization", b"Bearer first-token")
    kubernetes_secret(volume, "2026_12_08_00_05_00.2", {"token": "second-token"})
    assert header_of(credential) == (b"Authorization", b"Bearer first-token")  # not looked at yet
    clock.step()
    assert header_of(credential) == (b"Authorization", b"Bearer second-token")


def test_a_file_rewritten_in_place_is_used_too(tmp_path: Path) -> None:
    path = Path(secret(tmp_path, "key", "old-key"))
    clock = Clock()
    credential = credential_for(spec(api_key={"header": "X-Api-Key", "value_file": str(path)}), clock=clock)
    assert header_of(credential)[1] == b"old-key"
    path.write_text("new-key-of-another-length")
    clock.step()
    assert header_of(credential)[1] == b"new-key-of-another-length"


def test_the_real_clock_picks_up_a_rotation(tmp_path: Path) -> None:
    path = Path(secret(tmp_path, "token", "before"))
    credential = credential_for(spec(bearer={"token_file": str(path)}))
    assert header_of(credential)[1] == b"Bearer before"
    path.write_text("after")
    time.sleep(CHECK_INTERVAL + 0.05)
    assert header_of(credential)[1] == b"Bearer after"


# -- failing closed --------------------------------------------------------------------------


def test_an_emptied_file_fails_closed_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = Path(secret(tmp_path, "token", SECRET))
    clock = Clock()
    credential = credential_for(spec(bearer={"token_file": str(path)}), clock=clock)
    header_of(credential)
    path.write_text("")
    caplog.set_level(logging.INFO, logger="sidegate")
    for _ in range(3):
        clock.step()
        with pytest.raises(CredentialUnavailableError) as refused:
            header_of(credential)
        assert (
            str(refused.value)
            == f"credential partner: token_file {path}: the file is empty; put the secret value in it"
        )
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(path) in errors[0].getMessage()
    path.write_text("back-again")
    clock.step()
    assert header_of(credential) == (b"Authorization", b"Bearer back-again")
    assert any("usable again" in r.getMessage() for r in caplog.records)


def test_the_report_shows_the_state_and_never_the_value(tmp_path: Path) -> None:
    path = Path(secret(tmp_path, "token", SECRET))
    clock = Clock()
    credential = credential_for(spec(bearer={"token_file": str(path)}), clock=clock)
    assert credential.report() == {
        "name": "partner",
        "kind": "bearer",
        "state": "unknown",
        "problem": "",
        "last_refresh": None,
        "expires_in": None,
    }
    before = time.time()
    header_of(credential)
    shown = credential.report()
    assert shown["state"] == "ok" and before <= float(shown["last_refresh"]) <= time.time()  # type: ignore[arg-type]
    path.write_text("")
    clock.step()
    with pytest.raises(CredentialUnavailableError):
        header_of(credential)
    shown = credential.report()
    assert shown["state"] == "unavailable" and "the file is empty" in str(shown["problem"])
    assert SECRET not in repr(shown)


def test_a_removed_file_gives_no_stale_secret(tmp_path: Path) -> None:
    path = Path(secret(tmp_path, "password", SECRET))
    clock = Clock()
    credential = credential_for(spec(basic={"username": "u", "password_file": str(path)}), clock=clock)
    header_of(credential)
    path.unlink()
    clock.step()
    with pytest.raises(CredentialUnavailableError, match="file not found; mount the Secret"):
        header_of(credential)


def test_a_line_break_inside_the_value_is_refused_not_sent(tmp_path: Path) -> None:
    path = secret(tmp_path, "token", f"{SECRET}\r\nX-Injected: yes")
    with pytest.raises(CredentialUnavailableError, match="control character") as refused:
        header_of(credential_for(spec(bearer={"token_file": path})))
    assert SECRET not in str(refused.value)


def test_a_colon_in_a_username_file_is_refused(tmp_path: Path) -> None:
    block = {
        "username_file": secret(tmp_path, "user", "al:ice"),
        "password_file": secret(tmp_path, "pw", "x"),
    }
    with pytest.raises(CredentialUnavailableError, match="RFC 7617"):
        header_of(credential_for(spec(basic=block)))


def test_no_secret_in_any_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = Path(secret(tmp_path, "token", SECRET))
    clock = Clock()
    credential = credential_for(spec(bearer={"token_file": str(path)}), clock=clock)
    header_of(credential)
    path.write_text(SECRET + "\nmore")  # unusable: a control character
    clock.step()
    with pytest.raises(CredentialUnavailableError):
        header_of(credential)
    path.write_text(SECRET)
    clock.step()
    header_of(credential)
    assert caplog.records, "the failure and the recovery are logged"
    assert all(SECRET not in record.getMessage() for record in caplog.records)


# -- the header replaces the app's ------------------------------------------------------------


def test_the_apps_header_of_that_name_is_replaced_in_any_case() -> None:
    sent = [(b"host", b"api.partner.com"), (b"authorization", b"Bearer app-made"), (b"AUTHORIZATION", b"x")]
    out = with_credential(sent, b"Authorization", b"Bearer injected")
    assert out == [(b"host", b"api.partner.com"), (b"Authorization", b"Bearer injected")]


# -- the token endpoint's answer ---------------------------------------------------------------


def answer(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def test_a_token_is_refreshed_refresh_before_its_expiry() -> None:
    token = parse_token_response(
        200, answer(access_token="t", token_type="bearer", expires_in=3600), 10.0, 60.0, ""
    )
    assert (token.access_token, token.refresh_at, token.expires_at) == ("t", 3550.0, 3610.0)
    short = parse_token_response(
        200, answer(access_token="t", token_type="Bearer", expires_in="30"), 0.0, 60.0, ""
    )
    assert (short.refresh_at, short.expires_at) == (15.0, 30.0)  # shorter than refresh_before: halfway


def test_token_answers_a_header_cannot_use_are_refused() -> None:
    def reason(status: int, body: bytes) -> str:
        with pytest.raises(TokenError) as refused:
            parse_token_response(status, body, 0.0, 60.0, SECRET)
        return str(refused.value)

    assert "without a JSON object" in reason(200, b"<html>")
    assert "without an access_token" in reason(200, answer(token_type="Bearer"))
    assert "token_type 'mac' is not supported" in reason(200, answer(access_token="t", token_type="mac"))
    assert "cannot carry" in reason(200, answer(access_token="a\r\nb", token_type="Bearer"))
    assert "expires_in -1" in reason(200, answer(access_token="t", token_type="Bearer", expires_in=-1))
    refused = reason(400, answer(error="invalid_scope", error_description=f"{SECRET}\nnot allowed"))
    assert refused == "the token endpoint refused (400): invalid_scope: ***?not allowed"


# -- validation at load ------------------------------------------------------------------------


def refusal(**block: Any) -> str:
    with pytest.raises(ValidationError) as refused:
        spec(**block)
    return str(refused.value)


def test_exactly_one_kind(tmp_path: Path) -> None:
    token = secret(tmp_path, "token", SECRET)
    assert "give exactly one of bearer, api_key, basic and oauth2 (given: none)" in refusal()
    both = refusal(bearer={"token_file": token}, api_key={"header": "X-Key", "value_file": token})
    assert "(given: bearer, api_key)" in both


def test_a_missing_file_names_the_field_and_the_fix(tmp_path: Path) -> None:
    message = refusal(bearer={"token_file": str(tmp_path / "nope")})
    assert "bearer.token_file" in message
    assert "file not found; mount the Secret holding it there, or fix the path" in message


def test_an_empty_file_and_a_directory_are_refused(tmp_path: Path) -> None:
    assert "the file is empty" in refusal(bearer={"token_file": secret(tmp_path, "empty", "\n")})
    assert "is a directory; name the file inside it" in refusal(bearer={"token_file": str(tmp_path)})


def test_an_api_key_header_cannot_be_framing_or_host(tmp_path: Path) -> None:
    key = secret(tmp_path, "key", SECRET)
    assert "controls message framing" in refusal(api_key={"header": "Content-Length", "value_file": key})
    assert "Host header names the destination" in refusal(api_key={"header": "Host", "value_file": key})


def test_basic_needs_one_username_without_a_colon(tmp_path: Path) -> None:
    password = secret(tmp_path, "pw", SECRET)
    assert "exactly one of username and username_file" in refusal(basic={"password_file": password})
    assert "must not contain ':'" in refusal(basic={"username": "a:b", "password_file": password})


def test_oauth2_fields_are_checked(tmp_path: Path) -> None:
    client_secret = secret(tmp_path, "client-secret", SECRET)
    good = {
        "token_url": "https://auth.example.com/token",
        "client_id": "orders",
        "client_secret_file": client_secret,
    }
    loaded = spec(oauth2=good).oauth2
    assert loaded is not None
    assert (loaded.auth_method, loaded.refresh_before, loaded.scopes) == ("client_secret_basic", 60.0, ())
    assert "must be an http:// or https:// URL" in refusal(oauth2={**good, "token_url": "ftp://auth/token"})
    assert "must not hold user:password" in refusal(oauth2={**good, "token_url": "https://a:b@auth/token"})
    assert "invalid scope 'a b'" in refusal(oauth2={**good, "scopes": ["a b"]})
    assert "client_secret_basic" in refusal(oauth2={**good, "auth_method": "private_key_jwt"})
    assert "ca_file is set but token_url is not https://" in refusal(
        oauth2={**good, "token_url": "http://auth/token", "ca_file": client_secret}
    )
    assert spec(oauth2={**good, "refresh_before": "2m"}).oauth2.refresh_before == 120.0  # type: ignore[union-attr]


def test_unknown_keys_and_bad_names_are_refused(tmp_path: Path) -> None:
    token = secret(tmp_path, "token", SECRET)
    assert "Extra inputs are not permitted" in refusal(bearer={"token_file": token, "token": SECRET})
    with pytest.raises(ValidationError, match="invalid name"):
        CredentialsSpec.model_validate({"name": "has space", "bearer": {"token_file": token}})


def test_the_config_dump_hides_the_whole_block(tmp_path: Path) -> None:
    token = secret(tmp_path, "token", SECRET)
    block = CredentialsSpec.model_validate({"name": "partner", "bearer": {"token_file": token}}).model_dump()
    destination = {"host": "api.partner.com", "credentials": block}
    shown = redact({"egress": {"destinations": {"partner": destination}}})
    assert shown["egress"]["destinations"]["partner"] == {
        "host": "api.partner.com",
        "credentials": "***REDACTED***",
    }
