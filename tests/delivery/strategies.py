"""Hypothesis strategies for what an email carries: subjects, sender names,
addresses and bodies, from plain Indonesian to any Unicode text."""

from __future__ import annotations

from hypothesis import strategies as st

INDONESIAN = [
    "Surat",
    "Konfirmasi",
    "pelanggaran",
    "lalu",
    "lintas",
    "Jl.",
    "Jend.",
    "Sudirman",
    "(arah",
    "Blok",
    "M),",
    "Rp500.000",
    "Pasal",
    "287(1)",
    "Kepolisian",
    "Daerah",
    "Sulawesi",
    "Utara",
    "No.",
    "1234",
    "—",
    "·",
]
SPECIALS = [
    '"',
    "(",
    ")",
    "<",
    ">",
    ",",
    ";",
    ":",
    "@",
    "\\",
    ".",
    "[",
    "]",
    "=",
    "?",
    "_",
    "=?",
    "?=",
    "=?utf-8?q?x?=",
]
EMOJI = ["😀", "🚗💨", "🇮🇩", "👮‍♂️", "✅"]
# Any character that can be encoded (no lone surrogates), without white space.
WORD_CHARACTERS = st.characters(exclude_categories=["Cs", "Zs", "Zl", "Zp", "Cc"])
WORDS = st.one_of(
    st.sampled_from(INDONESIAN + SPECIALS + EMOJI),
    st.text(WORD_CHARACTERS, min_size=1, max_size=15),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=25),
    # Words too long for one line: folding has nowhere to cut.
    st.sampled_from(["x" * 80, "ÄÖÜ" * 30, "😀" * 25, "a" * 200]),
)
# Subjects as the notice's are made: words separated by single spaces (the
# renderer joins the subject's words so), which is what a reader gets back.
SUBJECTS = st.lists(WORDS, min_size=1, max_size=14).map(" ".join)
DISPLAY_NAMES = st.lists(WORDS, min_size=1, max_size=8).map(" ".join)

# Line breaks of every kind (those of str.splitlines) and NUL: a header value
# holding one is refused (tested on its own).
HEADER_REFUSED = "\r\n\0\v\f\x1c\x1d\x1e\x85\u2028\u2029"
# Free text of any kind for a header: runs of spaces and tabs, any character
# but those refused, and no white space at the start, which is the
# separator after the colon.
HEADER_TEXT = st.lists(
    st.tuples(
        st.one_of(
            WORDS, st.text(st.characters(exclude_categories=["Cs"], exclude_characters=HEADER_REFUSED), max_size=20)
        ),
        st.sampled_from([" ", "  ", "\t", " \t ", ""]),
    ),
    min_size=1,
    max_size=12,
).map(lambda pieces: "".join(word + space for word, space in pieces).lstrip(" \t"))

# Addresses as the registry holds them: a dot-atom local part, a DNS domain.
ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
ATOMS = st.text(st.sampled_from(ATEXT), min_size=1, max_size=20)
LABELS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
ADDRESSES = st.builds(
    lambda local, labels: ".".join(local) + "@" + ".".join(labels),
    st.lists(ATOMS, min_size=1, max_size=3),
    st.lists(LABELS, min_size=2, max_size=4),
)

# Bodies: any text, with every rule of the body encoding exercised: long
# lines, lines starting with "From " or ".", runs of spaces, trailing spaces,
# tabs, control characters, "=", and line breaks of every kind (CR, LF, CRLF).
BODY_PIECES = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=60),
    st.sampled_from(
        [
            "Kendaraan Anda tercatat melanggar lalu lintas; periksa keaslian surat di portal resmi. ",
            "From ",
            "\nFrom the camera",
            ".",
            "\n.",
            "  ",
            "\t",
            " \n",
            "\r",
            "\r\n",
            "\n",
            "=",
            "=20",
            "\x01",
            "\x00",
            "\u2028",
            "x" * 75,
            "é" * 40,
            "😀" * 30,
            "a" * 1200,
            "<p>Teks &amp; <b>tebal</b></p>",
        ]
    ),
)
BODY_TEXT = st.lists(BODY_PIECES, max_size=20).map("".join)
