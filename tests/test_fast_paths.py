"""The fast paths in contact loading agree exactly with the slow, obvious ones."""

import csv
import io

import pytest
from email_validator import EmailNotValidError, validate_email

from bulletin.contacts import _lines, _validator, load_contacts
from bulletin.fields import field_key, has_line_break


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


def test_a_domain_seen_before_skips_only_the_domain_pattern():
    """The cached domain stands for its pattern match; a bad local part still takes the long way."""
    check = _validator()
    for address in ("a@example.org", "a..b@example.org", "Info@example.org", "x y@example.org"):
        assert check(address) == reference(address)


# Rows as the loader read them before its C-built dicts and its one line-break search per row.
def reference_rows(text: str) -> list[tuple]:
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    keys = [field_key(h) if h.strip() else "" for h in rows[0]]
    out = []
    for row in rows[1:]:
        values = {k: c.strip() for k, c in zip(keys, row, strict=False) if k}
        broken = [
            k for k in ("email", "first_name", "last_name") if has_line_break(values.get(k, ""))
        ]
        out.append(("break", broken[0]) if broken else ("fields", values))
    return out


@pytest.mark.parametrize(
    "text",
    [
        'email,First Name,Last-Name,ward\nann@example.org, Ann ,"Lee\u2028X",Penge\n'
        'bob@example.org,"Bo\rb","Jo\nnes",x\ncy@example.org,Cy\n  , \t ,\n'
        "dee@example.org,,,,\n",
        "email,,ward,\nann@example.org,hidden,Penge,also hidden\nbob@example.org\n",
        'email,first_name\n"ann@example.org\x85",Ann\nbob@example.org,"B\x0cob"\n',
    ],
)
def test_rows_load_as_the_field_by_field_code_read_them(tmp_path, text):
    path = tmp_path / "c.csv"
    path.write_text(text, encoding="utf-8", newline="")
    loaded = load_contacts([path])
    expected = reference_rows(text)
    breaks = [p.text.split(" ")[0] for p in loaded.problems if "line break" in p.text]
    assert breaks == [key for kind, key in expected if kind == "break"]
    assert [dict(c.fields) for c in loaded.contacts] == [
        {**values, "email": values["email"].lower()}
        for kind, values in expected
        if kind == "fields"
    ]
