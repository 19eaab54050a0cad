"""The fast paths in contact loading agree exactly with the slow, obvious ones."""

import csv
import io

import pytest
from email_validator import EmailNotValidError, validate_email

from bulletin.contacts import _lines, _validator


def reference(address):
    try:
        result = validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        return address, str(error)
    return result.ascii_email or result.normalized, None


@pytest.mark.parametrize(
    "address",
    [
        "a@example.org",
        "A.B@Example.ORG",
        "Info@example.org",
        "x@localhost",
        "x@example",
        "a..b@example.org",
        "a@-example.org",
        "a@XN--BCHER-KVA.example",
        "a@bücher.example",
        "Zoë@example.org",
        "a" * 65 + "@example.org",
        "a@" + "b" * 64 + ".org",
        "o'neill@example.com",
        '"a b"@example.org',
        "a@[192.0.2.1]",
    ],
)
def test_one_check_per_domain_agrees_with_email_validator(address):
    check = _validator()
    check(address)  # the second call takes the cached path
    assert check(address) == reference(address)


@pytest.mark.parametrize("text", ["a,b\r\nc,d\n", 'a\rb\n"x\ny"\r\n', "a\u2028b,c\x0cd\n", "tail"])
def test_lines_split_like_stringio(text):
    assert list(csv.reader(_lines(text))) == list(csv.reader(io.StringIO(text, newline="")))
