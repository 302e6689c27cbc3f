"""What a negation or a direction marker reaches: the structural checks read
"without X", "non-X" and "in the absence of X" against what the other text says of
X, and a direction swap needs a marker between the two words that traded roles.

Each paraphrase below was vetoed before these rules (a right answer lost); each
change still fails its check. The texts are written for these tests, in the style
of answer-like statements a cache of LLM answers holds.
"""

from __future__ import annotations

import pytest

from stagecache.quality import analyse, compare


def failure(a: str, b: str) -> str | None:
    return compare(analyse(a), analyse(b)).first_failure()


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # "without X" where the other statement never mentions X: a detail
        (
            "`ImageLoader` can deduce the class name from the folder name without"
            " any manual input.",
            "`ImageLoader` automatically infers the class name from the folder name.",
        ),
        # "without X" / "non-X": both negate X
        (
            "The Fetcher class handles the downloading and unpacking of ZIP files"
            " without streaming.",
            "The Fetcher class is used to download and extract ZIP files in"
            " non-streaming mode.",
        ),
        # "in the absence of X" / "if there is no X"
        (
            "In the absence of a config file, all settings take their defaults."
            " However, if a config file is present, it is read and applied.",
            "If there is no config file, all settings take their defaults. If there"
            " is a config file, it is read and applied.",
        ),
    ],
)
def test_negation_reworded_between_statements_passes(a: str, b: str) -> None:
    assert failure(a, b) is None
    assert failure(b, a) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # the negated word is in the other text: a real flip
        (
            "The command-line tool installs the package without root access on"
            " every supported system.",
            "The command-line tool installs the package with root access on every"
            " supported system.",
        ),
        (
            "The Fetcher class downloads and extracts ZIP files in non-streaming"
            " mode only.",
            "The Fetcher class downloads and extracts ZIP files in streaming mode"
            " only.",
        ),
        (
            "In the absence of a config file, the server refuses to start and"
            " prints an error.",
            "In the presence of a config file, the server refuses to start and"
            " prints an error.",
        ),
        # in a question, "without X" narrows the ask even when the other text
        # never names X
        (
            "How can I lose weight fast without exercise?",
            "How can I lose weight fast?",
        ),
        (
            "What is the easiest way to get a loan without a credit check",
            "What is the easiest way to get a loan",
        ),
        # a short query fragment is not a statement
        ("bread recipe without yeast", "bread recipe"),
    ],
)
def test_negation_of_a_named_word_or_in_a_question_still_fails(a: str, b: str) -> None:
    assert failure(a, b) == "negation"
    assert failure(b, a) == "negation"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # an adverb moved from before the verb to the end: "to" is not a direction
        (
            "The `build_rows` function is employed to sequentially read and return"
            " CSV lines, and to match the labels in `label_file` with the images.",
            "The `build_rows` function is used to read and return CSV lines"
            " sequentially, and to associate the labels in `label_file` with the"
            " images.",
        ),
        # two words of one phrase changed order ("your GitLab account" / "your
        # account on GitLab"): no marker stands between them
        (
            "You can either make a new repository from your GitLab account or use"
            " the glab repo create command to push a project from the shell.",
            "You can create a new repository from your account on GitLab or push a"
            " project from the terminal using the glab repo create command.",
        ),
    ],
)
def test_words_reordered_inside_a_phrase_are_not_a_direction_swap(
    a: str, b: str
) -> None:
    assert failure(a, b) is None
    assert failure(b, a) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "Is Python faster than Java for web servers?",
            "Is Java faster than Python for web servers?",
        ),
        (
            "Cheapest Boston to Denver flights in May",
            "Cheapest Denver to Boston flights in May",
        ),
        (
            "How do I move files from my laptop to the NAS?",
            "How do I move files from the NAS to my laptop?",
        ),
    ],
)
def test_roles_swapped_across_a_marker_still_fail(a: str, b: str) -> None:
    assert failure(a, b) == "direction"
    assert failure(b, a) == "direction"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "Yes, you can shuffle a stream with `Stream.shuffle()`.",
            "You can shuffle a stream with `Stream.shuffle()`.",
        ),
        (
            "No, the page FOO does not exist in version 3.1.",
            "The page FOO does not exist in version 3.1.",
        ),
    ],
)
def test_an_answer_interjection_adds_no_words(a: str, b: str) -> None:
    pa, pb = analyse(a), analyse(b)
    assert pa.tokens == pb.tokens
    assert pa.negations == pb.negations
    assert failure(a, b) is None


def test_no_opening_a_statement_still_negates_it() -> None:
    assert analyse("No refund is possible after 30 days.").negations == 1
    assert analyse("Yes refunds are possible").tokens[0] == "yes"
