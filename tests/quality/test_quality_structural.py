"""The structural checks: each one fires on a real change and stays quiet on a
paraphrase."""

from __future__ import annotations

import pytest

from stagecache.quality import analyse, compare


def failure(a: str, b: str) -> str | None:
    return compare(analyse(a), analyse(b)).first_failure()


@pytest.mark.parametrize(
    ("a", "b", "check"),
    [
        ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?", "negation"),
        ("Why does my laptop charge?", "Why doesn't my laptop charge?", "negation"),
        (
            "How do I bake bread with yeast?",
            "How do I bake bread without yeast?",
            "negation",
        ),
        ("What is 15% tip on $80?", "What is 20% tip on $80?", "number"),
        (
            "How many calories are in 2 eggs?",
            "How many calories are in 3 eggs?",
            "number",
        ),
        ("Who won the World Cup in 2018?", "Who won the World Cup in 2022?", "date"),
        ("Weather in Berlin today", "Weather in Berlin tomorrow", "date"),
        ("What changed in Django 4.2?", "What changed in Django 5.0?", "version"),
        ("Is 100 mg of caffeine a lot?", "Is 100 g of caffeine a lot?", "unit"),
        ("What is 5 miles in km?", "What is 5 km in miles?", "unit"),
        ("What is the capital of Canada?", "What is the capital of Brazil?", "entity"),
        (
            "Cheapest flights from Chicago to Denver",
            "Cheapest flights from Denver to Chicago",
            "direction",
        ),
        ("Convert USD to EUR", "Convert EUR to USD", "direction"),
        (
            "How do I install Docker on Ubuntu?",
            "How do I uninstall Docker on Ubuntu?",
            "different_ask",
        ),
        ("Why is the sky blue?", "When is the sky blue?", "different_ask"),
        (
            "In what year was penicillin discovered?",
            "Who discovered penicillin?",
            "different_ask",
        ),
    ],
)
def test_check_fires_on_a_change(a: str, b: str, check: str) -> None:
    assert failure(a, b) == check


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "Why isn't my Docker container starting?",
            "Why is my Docker container not starting?",
        ),
        ("I can't log in to my account", "I cannot log in to my account"),
        ("How many calories are in 3 eggs?", "How many calories do three eggs have?"),
        ("What is 15% tip on $80?", "How much is a 15 percent tip on 80 dollars?"),
        ("Who won the World Cup in 2018?", "Which country won the 2018 World Cup?"),
        ("What changed in Django 5.0?", "What is new in Django 5.0?"),
        ("Convert 70 kg to lbs", "How many lbs is 70 kg?"),
        ("How do I reverse a list in Python?", "In Python, how do I reverse a list?"),
        (
            "How do I migrate from MySQL to PostgreSQL?",
            "What are the steps to move from MySQL to PostgreSQL?",
        ),
        (
            "How do I transfer money from PayPal to my bank?",
            "How can I move money from PayPal into my bank account?",
        ),
        ("What is the capital of Australia?", "What's the capital city of Australia?"),
        # each check with its feature present on both sides, unchanged
        ("Is it not safe to eat raw eggs?", "Is eating raw eggs not safe?"),
        ("Who won the World Cup in 2018?", "2018 World Cup: who won it?"),
        ("What year did World War 2 end?", "When did World War 2 end?"),
        ("How do I install Docker?", "What are the steps to install Docker?"),
        ("Weather in Berlin tomorrow", "Berlin weather forecast for tomorrow"),
        ("Convert USD to EUR", "How do I convert from USD to EUR?"),
        ("Is 100 mg of caffeine a lot?", "Is 100 milligrams of caffeine too much?"),
    ],
)
def test_paraphrase_passes_every_check(a: str, b: str) -> None:
    assert failure(a, b) is None


def test_checks_are_symmetric_on_a_swap() -> None:
    a, b = "Translate from English to Spanish", "Translate from Spanish to English"
    assert failure(a, b) == failure(b, a) == "direction"


def test_long_statements_skip_fuzzy_checks() -> None:
    filler = " and it also explains the setup in detail" * 5
    a = "No, the feature is not part of v2.10.0" + filler
    b = "The feature does not exist in v2.10.0" + filler
    assert failure(a, b) is None


@pytest.mark.parametrize(
    ("a", "b", "check"),
    [
        # "No" opening a statement negates it; only "No," answers a question
        (
            "No refund is possible after 30 days.",
            "A refund is possible after 30 days.",
            "negation",
        ),
        (
            "Why is my Docker container running after the reboot finished?"
            " I restarted the whole host machine twice and checked the logs",
            "Why is my Docker container not running after the reboot finished?"
            " I restarted the whole host machine twice and checked the logs",
            "negation",
        ),
    ],
)
def test_negation_fires_in_statements_and_long_near_identical_texts(
    a: str, b: str, check: str
) -> None:
    assert failure(a, b) == check


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("No, you can return it within 30 days.", "You can return it within 30 days."),
        # an entity the other text names too is not a swap, wherever it stands
        (
            "You can push your dataset to the Hugging Face Hub by utilizing"
            " `Dataset.push_to_hub()`.",
            "You can upload your dataset to the Hugging Face Hub using"
            " `Dataset.push_to_hub()`.",
        ),
        # a long statement reworded as a whole keeps its meaning while its
        # negation count flips ("without copying" / "zero-copy")
        (
            "The slice method produces a view of the table without any copying,"
            " and you may give an offset and a length for the view you need.",
            "The slice method computes a zero-copy slice of the table, with the"
            " option to specify an offset and length.",
        ),
        (
            "The parameter is not mandatory and is set to True by default; it is"
            " employed to incorporate the datasets provided by the community.",
            "The parameter is optional and defaults to True. It is used to include"
            " the community provided datasets in the listing.",
        ),
    ],
)
def test_rewordings_pass_the_fuzzy_checks(a: str, b: str) -> None:
    assert failure(a, b) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "The light reactions of photosynthesis take place in the stroma of the"
            " chloroplast, while the Calvin cycle happens in the thylakoid membranes.",
            "The light reactions of photosynthesis take place in the thylakoid"
            " membranes of the chloroplast, while the Calvin cycle happens in the"
            " stroma.",
        ),
        (
            "Adjusting to a new time zone takes about one day per zone crossed, and"
            " flying west is generally harder on the body than flying east.",
            "Adjusting to a new time zone takes about one day per zone crossed, and"
            " flying east is generally harder on the body than flying west.",
        ),
        (
            "Do Pakistani women find Indian men attractive?",
            "Do Indian women find Pakistani men attractive?",
        ),
    ],
)
def test_swapped_key_terms_fail_the_direction_check(a: str, b: str) -> None:
    assert failure(a, b) == "direction"
    assert failure(b, a) == "direction"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # symmetric relations and reordered lists are not swaps
        (
            "What is the difference between an ideal gas and a real gas?",
            "What is the difference between a real gas and an ideal gas?",
        ),
        (
            "Which coaching class is better in Lucknow, Aakash or SKD?",
            "Which coaching class is better, SKD or Aakash, in Lucknow?",
        ),
        ("How do I reverse a list in Python?", "In Python, how do I reverse a list?"),
    ],
)
def test_reordered_paraphrases_are_not_swaps(a: str, b: str) -> None:
    assert failure(a, b) is None
