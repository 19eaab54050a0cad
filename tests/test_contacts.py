"""Contact lists as spreadsheets export them: every quirk in DESIGN.md, errors as FILE:LINE."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulletin.contacts import ContactList, load_contacts, matches, where

HEADER = b"email,first_name,last_name,ward\n"


def load(folder: Path, data: bytes, name: str = "c.csv") -> ContactList:
    """Write `data` as a CSV file in `folder` and load it."""
    path = folder / name
    path.write_bytes(data)
    return load_contacts([path], folder)


def problem_lines(contact_list: ContactList) -> list[str]:
    return [str(p) for p in contact_list.problems]


# --- headers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"email,first_name,last_name", ["email", "first_name", "last_name"]),
        (b"Email Address,First Name,Surname", ["email", "first_name", "last_name"]),
        (b"E-mail,Forename,Last Name", ["email", "first_name", "last_name"]),
        (b"email_address,first-name,LAST_NAME", ["email", "first_name", "last_name"]),
        (b"EMAIL, First Name ,  Surname  ", ["email", "first_name", "last_name"]),
        (b'"Email Address","Given Name","Family Name"', ["email", "first_name", "last_name"]),
        (b"Mail,Telephone,Post Code", ["email", "phone", "postcode"]),
        (b"email,Postal Address,Zip", ["email", "address", "postcode"]),
        (b"email,Ward,Role,Scheme", ["email", "ward", "role", "scheme"]),
        # Any other column is a placeholder field under its normalised name.
        (b"email,Street Name,Block-Number", ["email", "streetname", "blocknumber"]),
    ],
)
def test_header_spellings_map_to_columns(tmp_path, header, expected):
    values = [b"ann@example.org", b"Ann", b"Lee", b"x"][: len(expected)]
    loaded = load(tmp_path, header + b"\n" + b",".join(values) + b"\n")
    assert loaded.problems == []
    assert sorted(loaded.columns) == sorted(expected)
    (contact,) = loaded.contacts
    assert contact.email == "ann@example.org"
    assert list(contact.fields) == expected


# --- encodings and line ends -------------------------------------------------------------------

ROW = "email,first_name,last_name\nzoe@example.org,Zoë,O’Neill\n"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(ROW.encode("utf-8"), id="utf-8"),
        pytest.param(b"\xef\xbb\xbf" + ROW.encode("utf-8"), id="utf-8 with BOM"),
        pytest.param(ROW.encode("cp1252"), id="windows-1252"),
        pytest.param(ROW.replace("\n", "\r\n").encode("cp1252"), id="windows-1252 CRLF"),
        pytest.param(b"\xef\xbb\xbf" + ROW.replace("\n", "\r\n").encode(), id="BOM CRLF"),
        pytest.param(ROW.replace("\n", "\r").encode(), id="old Mac CR"),
    ],
)
def test_encodings_and_line_ends(tmp_path, data):
    loaded = load(tmp_path, data)
    assert loaded.problems == []
    (contact,) = loaded.contacts
    assert (contact.email, contact.first_name, contact.last_name) == (
        "zoe@example.org",
        "Zoë",
        "O’Neill",
    )
    assert contact.line == 2


def test_bom_does_not_hide_the_email_header(tmp_path):
    loaded = load(tmp_path, b'\xef\xbb\xbf"Email Address","First Name"\r\nann@example.org,Ann\r\n')
    assert "email" in loaded.columns
    assert [c.email for c in loaded.contacts] == ["ann@example.org"]


# --- records spanning lines, and the LINE reported ------------------------------------------------


def test_quoted_field_with_newlines_is_one_record(tmp_path):
    loaded = load(
        tmp_path,
        b"email,first_name,address,postcode\n"
        b'ann@example.org,Ann,"1 High Street\nPenge\nLondon",SE20 1AA\n'
        b"bob@example.org,Bob,,\n",
    )
    assert loaded.problems == []
    ann, bob = loaded.contacts
    assert ann.get("address") == "1 High Street\nPenge\nLondon"
    assert (ann.line, bob.line) == (2, 5)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            HEADER + b'ann@example.org,Ann,"Lee",Penge\nnot-an-address,Bob,Jones,Penge\n',
            "c.csv:3: 'not-an-address' is not a valid email address",
            id="invalid address",
        ),
        pytest.param(
            b"email,first_name,address,postcode\n"
            b'ann@example.org,Ann,"1 High St\nPenge\nLondon",SE20 1AA\n'
            b"bob@example,Bob,,\n",
            "c.csv:5: 'bob@example' is not a valid email address",
            id="bad row after a three-line record",
        ),
        pytest.param(
            b"email,first_name,address,postcode\r\n"
            b'ann@example.org,Ann,"1 High St\r\nPenge",SE20 1AA\r\n'
            b"\r\n"
            b"bob@@example.org,Bob,,\r\n",
            "c.csv:5: 'bob@@example.org' is not a valid email address",
            id="CRLF, multi-line record and a blank line before the bad row",
        ),
        pytest.param(
            b"\n\n" + HEADER + b"ann@example.org,Ann,Lee,Penge\nbob,Bob,Jones,Penge\n",
            "c.csv:5: 'bob' is not a valid email address",
            id="blank lines before the header",
        ),
        pytest.param(
            HEADER + b'ann@example.org,"Ann\nMarie",Lee,Penge\n',
            "c.csv:2: first_name contains a line break",
            id="LF in a first name",
        ),
        pytest.param(
            HEADER + b'ann@example.org,Ann,"Lee\r\nBcc: x@example.com",Penge\n',
            "c.csv:2: last_name contains a line break",
            id="CRLF in a last name",
        ),
        pytest.param(
            HEADER + b'"ann@example.org\nBcc: x@example.com",Ann,Lee,Penge\n',
            "c.csv:2: email contains a line break",
            id="LF in an address",
        ),
        pytest.param(
            HEADER + b",Ann,Lee,Penge\n",
            "c.csv:2: no email address (a postal-only contact needs both address and postcode)",
            id="no address at all",
        ),
        pytest.param(
            b"email,first_name,address,postcode\n,Ann,1 High St,\n",
            "c.csv:2: no email address (a postal-only contact needs both address and postcode)",
            id="postal address without postcode",
        ),
        pytest.param(
            HEADER + b"ann@example.org,Ann,Lee,Penge,extra\n",
            "c.csv:2: 5 fields but the header has 4; check for a stray comma",
            id="extra field",
        ),
        pytest.param(
            HEADER + b"ann@exa\x00mple.org,Ann,Lee,Penge\n",
            "c.csv:2: contains a NUL byte",
            id="NUL byte",
        ),
        pytest.param(
            HEADER
            + "ann@example.org,Ann\u2028Marie,Lee\x0cX,Penge\n".encode()
            + b"bob@exa\x00mple.org,Bob,Jones,Penge\n",
            "c.csv:3: contains a NUL byte",
            id="NUL byte after a line with a form feed and a line separator",
        ),
        pytest.param(
            b"first_name,last_name,ward\nAnn,Lee,Penge\n",
            "c.csv:1: no email column (the header row must name one:",
            id="no email column",
        ),
        pytest.param(
            b"Email,E-mail,first_name\nann@example.org,ann@example.org,Ann\n",
            "c.csv:1: columns 'Email' and 'E-mail' both mean email; keep one",
            id="duplicate header",
        ),
        pytest.param(
            b"email,First Name,firstname\nann@example.org,Ann,Ann\n",
            "c.csv:1: columns 'First Name' and 'firstname' both mean first_name; keep one",
            id="duplicate first-name header",
        ),
        pytest.param(
            b"",
            "c.csv: empty file: the first row must be a header with an email column",
            id="empty file",
        ),
        pytest.param(
            b"\r\n\r\n",
            "c.csv: empty file: the first row must be a header with an email column",
            id="only blank lines",
        ),
    ],
)
def test_problems_name_the_file_and_the_line_the_record_starts_on(tmp_path, data, expected):
    loaded = load(tmp_path, data)
    lines = problem_lines(loaded)
    assert any(line.startswith(expected) for line in lines), lines


def test_invalid_rows_are_left_out_and_valid_rows_kept(tmp_path):
    loaded = load(
        tmp_path,
        HEADER
        + b"ann@example.org,Ann,Lee,Penge\n"
        + b"bad address,Bob,Jones,Penge\n"
        + b"cat@example.net,Cat,Smith,Penge\n",
    )
    assert [c.email for c in loaded.contacts] == ["ann@example.org", "cat@example.net"]
    assert len(loaded.problems) == 1


def test_every_invalid_row_is_listed(tmp_path):
    loaded = load(
        tmp_path,
        HEADER
        + b"one,A,B,Penge\n"
        + b"ann@example.org,Ann,Lee,Penge\n"
        + b"two@,C,D,Penge\n"
        + b'"three@example.org\nBcc: x@example.com",E,F,Penge\n',
    )
    assert [p.line for p in loaded.problems] == [2, 4, 5]


def test_header_problems_stop_the_file_without_reading_rows(tmp_path):
    loaded = load(tmp_path, b"name,ward\nAnn,Penge\nBob,Penge\n")
    assert loaded.contacts == []
    assert len(loaded.problems) == 1


def test_addresses_are_validated_and_normalised(tmp_path):
    loaded = load(tmp_path, b"email\n  Ann.Lee@EXAMPLE.ORG  \n")
    assert loaded.problems == []
    # The domain is lower-cased; the local part is kept as written.
    assert loaded.contacts[0].email == "Ann.Lee@example.org"


@pytest.mark.parametrize(
    "address",
    ["ann", "ann@", "@example.org", "ann@example", "ann example@example.org", "ann@@example.org"],
)
def test_invalid_addresses_are_reported(tmp_path, address):
    loaded = load(tmp_path, b"email\n" + address.encode() + b"\n")
    assert loaded.contacts == []
    (problem,) = loaded.problems
    assert str(problem).startswith(f"c.csv:2: {address!r} is not a valid email address: ")


# --- blank rows, header only, extra columns ------------------------------------------------------


def test_blank_trailing_rows_are_ignored_silently(tmp_path):
    loaded = load(tmp_path, HEADER + b"ann@example.org,Ann,Lee,Penge\n\n\n,,,\n , ,,\r\n")
    assert loaded.problems == []
    assert loaded.duplicates == []
    assert len(loaded.contacts) == 1


def test_a_header_alone_is_an_empty_list_not_an_error(tmp_path):
    loaded = load(tmp_path, HEADER)
    assert loaded.problems == []
    assert loaded.contacts == []
    assert loaded.columns == {"email", "first_name", "last_name", "ward"}


def test_short_rows_leave_the_missing_columns_empty(tmp_path):
    loaded = load(tmp_path, HEADER + b"ann@example.org,Ann\n")
    assert loaded.problems == []
    assert loaded.contacts[0].get("ward") == ""


def test_empty_trailing_cells_beyond_the_header_are_tolerated(tmp_path):
    loaded = load(tmp_path, HEADER + b"ann@example.org,Ann,Lee,Penge,,\n")
    assert loaded.problems == []
    assert len(loaded.contacts) == 1


def test_unknown_columns_become_fields(tmp_path):
    loaded = load(tmp_path, b"email,Scheme Name,Meeting Night\nann@example.org,Elm Road,Tuesday\n")
    assert loaded.contacts[0].get("meetingnight") == "Tuesday"
    assert "schemename" in loaded.columns


def test_cells_are_trimmed(tmp_path):
    # A line break at the very end of a cell is trimmed away, so it cannot reach a header.
    loaded = load(tmp_path, HEADER + b' ann@example.org ,  Ann ,"Lee\r\n",Penge \n')
    contact = loaded.contacts[0]
    assert (contact.email, contact.first_name, contact.last_name, contact.get("ward")) == (
        "ann@example.org",
        "Ann",
        "Lee",
        "Penge",
    )


# --- postal-only contacts ----------------------------------------------------------------------


def test_postal_only_contacts_need_address_and_postcode(tmp_path):
    loaded = load(
        tmp_path,
        b"email,first_name,last_name,address,postcode\n"
        b"ann@example.org,Ann,Lee,,\n"
        b',Harold,Bennett,"8 Lynwood Grove, Orpington",BR6 0BG\n',
    )
    assert loaded.problems == []
    ann, harold = loaded.contacts
    assert not ann.postal_only
    assert harold.postal_only and harold.email == ""
    assert loaded.emailable == [ann]
    assert loaded.postal == [harold]


def test_a_list_of_postal_contacts_needs_no_email_column(tmp_path):
    loaded = load(tmp_path, b"name,address,postcode\nHarold,8 Lynwood Grove,BR6 0BG\n")
    assert loaded.problems == []
    assert len(loaded.postal) == 1


def test_postal_only_contacts_are_never_duplicates(tmp_path):
    loaded = load(
        tmp_path,
        b"email,address,postcode\n,1 High St,SE20 1AA\n,1 High St,SE20 1AA\n",
    )
    assert loaded.duplicates == []
    assert len(loaded.postal) == 2


# --- duplicates --------------------------------------------------------------------------------


def test_duplicates_are_case_insensitive_sent_once_and_reported_with_both_places(tmp_path):
    loaded = load(
        tmp_path,
        HEADER + b"Ann@Example.org,Ann,Lee,Penge\nbob@example.org,Bob,Jones,Penge\n"
        b"ann@example.ORG,Annie,Lee,Penge\n",
    )
    assert loaded.problems == []
    assert [c.first_name for c in loaded.contacts] == ["Ann", "Bob"]
    (duplicate,) = loaded.duplicates
    assert str(duplicate) == (
        "c.csv:4: ann@example.org is also on c.csv:2; it will be sent one copy"
    )


def test_duplicates_across_files_are_reported_with_both_files(tmp_path):
    (tmp_path / "a.csv").write_bytes(HEADER + b"ann@example.org,Ann,Lee,Penge\n")
    (tmp_path / "b.csv").write_bytes(HEADER + b"\nANN@example.org,Ann,Lee,Penge\n")
    loaded = load_contacts([tmp_path / "a.csv", tmp_path / "b.csv"], tmp_path)
    assert len(loaded.contacts) == 1
    assert [str(d) for d in loaded.duplicates] == [
        "b.csv:3: ANN@example.org is also on a.csv:2; it will be sent one copy"
    ]


# --- filters -----------------------------------------------------------------------------------


def test_audience_matching_is_exact_but_case_insensitive(tmp_path):
    loaded = load(tmp_path, HEADER + b"ann@example.org,Ann,Lee,Penge and Cator\n")
    (ann,) = loaded.contacts
    assert matches(ann, {"ward": ["penge and cator"]})
    assert not matches(ann, {"ward": ["Penge"]})
    assert matches(ann, {})


def test_where_is_a_case_insensitive_contains_search(tmp_path):
    loaded = load(
        tmp_path,
        HEADER + b"ann@example.org,Ann,Lee,Penge and Cator\nbob@example.org,Bob,Jones,Bickley\n",
    )
    assert [c.first_name for c in where(loaded.contacts, {"Ward": "PENGE"})] == ["Ann"]
    assert [c.first_name for c in where(loaded.contacts, {"first name": "b"})] == ["Bob"]
    assert where(loaded.contacts, {}) == loaded.contacts


# --- the packaged sample -----------------------------------------------------------------------


def test_the_packaged_sample_list_is_clean_and_fictional(workdir):
    loaded = load_contacts([workdir / "contacts" / "coordinators.csv"], workdir)
    assert loaded.problems == [] and loaded.duplicates == []
    assert (len(loaded.emailable), len(loaded.postal)) == (34, 2)
    domains = {c.email.rsplit("@", 1)[1] for c in loaded.emailable}
    assert domains <= {"example.org", "example.com", "example.net"}


# --- the commands ------------------------------------------------------------------------------


def test_contacts_check_passes_the_sample(workdir, cli):
    result = cli("contacts", "check")
    assert result.stdout.strip() == "36 contacts OK in 1 file(s) (34 with email, 2 postal-only)"


def test_contacts_check_lists_every_invalid_row_and_exits_1(workdir, cli):
    (workdir / "contacts" / "extra.csv").write_bytes(
        HEADER + b"ann@example.org,Ann,Lee,Penge\nnope,Bob,Jones,Penge\n,Cat,Smith,Penge\n"
    )
    result = cli("contacts", "check", expect=1)
    lines = result.stderr.splitlines()
    assert lines[0].startswith("contacts/extra.csv:3: 'nope' is not a valid email address")
    assert lines[1].startswith("contacts/extra.csv:4: no email address")
    assert lines[-1] == "Error: 2 invalid row(s) in 2 file(s)"
    assert "Traceback" not in result.output


def test_contacts_check_reports_duplicates_but_passes(workdir, cli):
    (workdir / "contacts" / "extra.csv").write_bytes(
        HEADER + b"Margaret.Okafor@example.org,Margaret,Okafor,Penge\n"
    )
    result = cli("contacts", "check")
    assert result.stderr.strip() == (
        "contacts/extra.csv:2: Margaret.Okafor@example.org is also on "
        "contacts/coordinators.csv:2; it will be sent one copy"
    )
    assert "1 duplicates skipped" in result.stdout


def test_contacts_check_named_files(workdir, cli):
    (workdir / "other.csv").write_bytes(HEADER + b"ann@example.org,Ann,Lee,Penge\n")
    result = cli("contacts", "check", "other.csv")
    assert result.stdout.startswith("1 contacts OK in 1 file(s)")


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("missing.csv", "Error: missing.csv: no such contact file"),
        ("lists/*.csv", "Error: lists/*.csv: no contact file matches; add a CSV file or run"),
    ],
)
def test_contacts_check_missing_files(workdir, cli, argument, message):
    result = cli("contacts", "check", argument, expect=1)
    assert result.stderr.startswith(message)


def test_contacts_check_empty_file(workdir, cli):
    (workdir / "contacts" / "empty.csv").write_bytes(b"")
    result = cli("contacts", "check", "contacts/empty.csv", expect=1)
    assert "contacts/empty.csv: empty file" in result.stderr


def test_contacts_list_where_is_case_insensitive_contains(workdir, cli):
    result = cli("contacts", "list", "--where", "ward=Penge")
    assert result.stdout.rstrip().endswith("5 of 36 contacts")
    assert "margaret.okafor@example.org" in result.stdout
    assert "(postal)" in result.stdout  # Eileen Hughes, postal-only, in Penge and Cator
    assert "zoe.lefevre@example.org" not in result.stdout
    assert cli("contacts", "list", "--where", "WARD=penge").stdout == result.stdout


def test_contacts_list_where_repeated_means_and(workdir, cli):
    result = cli("contacts", "list", "--where", "ward=penge", "--where", "role=partner")
    assert "office.stjohnspenge@example.org" in result.stdout
    assert result.stdout.rstrip().endswith("1 of 36 contacts")


def test_contacts_list_everyone(workdir, cli):
    result = cli("contacts", "list")
    assert result.stdout.rstrip().endswith("36 of 36 contacts")
    assert "contacts/coordinators.csv:37" in result.stdout


def test_contacts_list_where_needs_column_equals_text(workdir, cli):
    result = cli("contacts", "list", "--where", "Penge", expect=2)
    assert "write COLUMN=TEXT" in result.stderr


def test_contacts_list_where_unknown_column_is_an_error(workdir, cli):
    result = cli("contacts", "list", "--where", "wrad=Penge", expect=1)
    assert "wrad" in result.stderr and "ward" in result.stderr
