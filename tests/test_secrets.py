"""A database password never reaches the terminal: not through a misparsed URL, not through a
server's message in another case, not percent-encoded."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from colora.core.errors import InvalidInputError
from colora.store.database import parse_url, scrub, shown
from helpers import err, invoke, out


def test_an_unencoded_at_in_the_password_is_refused_without_printing_any_of_it(isolated_home):
    url = "postgresql+psycopg://bob:Zq7@Kx7Wv@127.0.0.1:1/colora"
    r = invoke("--db", url, "list")
    text = out(r) + err(r)
    assert r.exit_code == 1 and "more than one '@' before its host" in text and "%40" in text
    assert "Zq7" not in text and "Kx7Wv" not in text and "Traceback" not in text


def test_a_port_that_is_not_a_number_is_a_one_line_error(isolated_home):
    r = invoke("--db", "postgresql+psycopg://bob:Secret1@db.example:abc/colora", "list")
    assert r.exit_code == 1 and "port is not a number" in err(r)
    assert "unexpected" not in err(r) and "Secret1" not in out(r) + err(r)


def test_a_server_message_in_any_case_or_encoding_loses_the_password():
    url = "postgresql+psycopg://bob:MiXeD%40Pw9@db/colora?sslpassword=KeyPass7"
    message = "FATAL: password authentication failed: mixed@pw9 / MIXED%40PW9 / keypass7 for bob"
    scrubbed = scrub(message, url)
    assert scrubbed == "FATAL: password authentication failed: *** / *** / *** for bob"
    assert shown(url) == "postgresql+psycopg://bob:***@db/colora?sslpassword=%2A%2A%2A"


def _printed(password: str) -> list[tuple[str, str]]:
    """(url, text) for everything colora prints of a URL holding `password`, encoded and not."""
    found = []
    for url in (
        f"postgresql+psycopg://bob:{quote(password, safe='')}@db.example/colora",
        f"postgresql+psycopg://bob:{password}@db.example/colora",  # unencoded, as people type it
    ):
        printed = [shown(url), scrub(f"could not connect to {url} ({password.upper()})", url)]
        try:
            parse_url(url)
        except InvalidInputError as e:
            printed += [e.message, e.hint or ""]
        found += [(url, text) for text in printed]
    return found


# What colora prints whatever the password is (the URL's other parts, the messages' words), from
# passwords of every shape the parser treats apart, made of a character the generator never draws:
# a password that is a piece of that text ("lora" of "colora") cannot be told from a leak.
_FIXED = " ".join(t for s in ("\x01", "\x01@\x01", "\x01:\x01", "\x01/\x01", "\x01%\x01") for _, t in _printed(s))
_FIXED = _FIXED.replace("\x01", " ").replace("%01", " ").lower()


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=4, max_size=24))
def test_no_password_survives_in_what_colora_prints_of_a_url(password):
    assume(password.lower() not in _FIXED)
    for url, text in _printed(password):
        assert password.lower() not in text.lower(), (url, text)


@pytest.mark.parametrize("url", ["postgresql+psycopg://bob:pw@host:99999999999999999999/db", "not a url"])
def test_hostile_urls_are_refused_as_input_errors(url):
    with pytest.raises(InvalidInputError):
        parse_url(url)
