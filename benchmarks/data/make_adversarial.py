"""Generate ``adversarial.jsonl``: near-miss query pairs that must NOT hit, and true
paraphrases that must still hit, across assistant domains.

Run ``python benchmarks/data/make_adversarial.py``. Deterministic. Every pair gets a
``split``: whole *template groups* are held out (``heldout``), so the held-out slice
measures phrasings the verifier never saw in training, not memorised ones.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("adversarial.jsonl")

# (category, same, [(a, b), ...]) groups; each group is one template family.
G: list[tuple[str, bool, list[tuple[str, str]]]] = []


def group(category: str, same: bool, pairs: list[tuple[str, str]]) -> None:
    G.append((category, same, pairs))


def fill(
    template_a: str, template_b: str, values: list[dict[str, str]]
) -> list[tuple[str, str]]:
    return [(template_a.format(**v), template_b.format(**v)) for v in values]


# ---------------------------------------------------------------- negation
group(
    "negation",
    False,
    [
        ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"),
        (
            "Is it safe to take ibuprofen with coffee?",
            "Is it unsafe to take ibuprofen with coffee?",
        ),
        (
            "Why is my Docker container running?",
            "Why is my Docker container not running?",
        ),
        (
            "Why does my laptop charge when plugged in?",
            "Why doesn't my laptop charge when plugged in?",
        ),
        (
            "Should I use a VPN on public Wi-Fi?",
            "Should I not use a VPN on public Wi-Fi?",
        ),
        ("Can I freeze cooked rice?", "Can I not freeze cooked rice?"),
        ("Which foods contain gluten?", "Which foods contain no gluten?"),
        (
            "List countries that require a visa for US citizens.",
            "List countries that do not require a visa for US citizens.",
        ),
        ("Is the package installed?", "Is the package not installed?"),
        ("Why is my git push working?", "Why is my git push not working?"),
    ],
)
group(
    "negation",
    False,
    fill(
        "How do I {verb} with {obj}?",
        "How do I {verb} without {obj}?",
        [
            {"verb": "bake bread", "obj": "yeast"},
            {"verb": "make a cake", "obj": "eggs"},
            {"verb": "log in", "obj": "a password"},
            {"verb": "run the tests", "obj": "Docker"},
            {"verb": "deploy the app", "obj": "downtime"},
            {"verb": "travel to Japan", "obj": "a visa"},
            {"verb": "lose weight", "obj": "exercise"},
            {"verb": "sign the PDF", "obj": "Adobe"},
        ],
    ),
)
group(
    "negation",
    False,
    fill(
        "Is {x} safe during pregnancy?",
        "Is {x} never safe during pregnancy?",
        [
            {"x": "caffeine"},
            {"x": "sushi"},
            {"x": "paracetamol"},
            {"x": "hair dye"},
            {"x": "flying"},
            {"x": "running"},
        ],
    ),
)
group(
    "negation",
    False,
    fill(
        "What happens if I {x}?",
        "What happens if I don't {x}?",
        [
            {"x": "pay my credit card bill"},
            {"x": "update my iPhone"},
            {"x": "file taxes this year"},
            {"x": "water my cactus"},
            {"x": "renew my passport"},
            {"x": "restart the server"},
            {"x": "take the antibiotics"},
            {"x": "cancel the subscription"},
        ],
    ),
)
group(
    "negation",
    False,
    fill(
        "Does {x} support {y}?",
        "Does {x} not support {y}?",
        [
            {"x": "Postgres", "y": "JSON columns"},
            {"x": "the free plan", "y": "custom domains"},
            {"x": "Safari", "y": "WebGPU"},
            {"x": "my car insurance", "y": "rental cars"},
            {"x": "this router", "y": "WPA3"},
            {"x": "Kubernetes", "y": "Windows nodes"},
        ],
    ),
)

# ---------------------------------------------------------------- numbers
group(
    "number",
    False,
    fill(
        "How do I split a {n1} dollar bill between {p1} people?",
        "How do I split a {n1} dollar bill between {p2} people?",
        [
            {"n1": "120", "p1": "4", "p2": "6"},
            {"n1": "90", "p1": "3", "p2": "5"},
            {"n1": "250", "p1": "5", "p2": "2"},
        ],
    ),
)
group(
    "number",
    False,
    fill(
        "What is {a} times {b}?",
        "What is {a} times {c}?",
        [
            {"a": "17", "b": "23", "c": "32"},
            {"a": "12", "b": "8", "c": "9"},
            {"a": "45", "b": "3", "c": "4"},
        ],
    ),
)
group(
    "number",
    False,
    [
        ("How many calories are in 2 eggs?", "How many calories are in 3 eggs?"),
        (
            "What is the monthly payment on a 300000 mortgage at 6% for 30 years?",
            "What is the monthly payment on a 300000 mortgage at 7% for 30 years?",
        ),
        (
            "What is the monthly payment on a 200000 loan over 15 years?",
            "What is the monthly payment on a 200000 loan over 30 years?",
        ),
        (
            "How long should I boil a 5 minute egg recipe for 4 servings?",
            "How long should I boil a 5 minute egg recipe for 8 servings?",
        ),
        ("Recipe for pancakes for 2 people", "Recipe for pancakes for 10 people"),
        ("What is 15% tip on $80?", "What is 20% tip on $80?"),
        ("Give me a 3 day itinerary for Rome.", "Give me a 7 day itinerary for Rome."),
        (
            "Write a 500 word essay on climate change.",
            "Write a 1000 word essay on climate change.",
        ),
        (
            "Top 5 programming languages to learn",
            "Top 10 programming languages to learn",
        ),
        ("How much is 1 bitcoin worth?", "How much are 2 bitcoins worth?"),
        ("Is 97 a prime number?", "Is 91 a prime number?"),
        ("What is the square root of 144?", "What is the square root of 169?"),
    ],
)
group(
    "number",
    False,
    fill(
        "I am {a} years old, how much should I have saved for retirement?",
        "I am {b} years old, how much should I have saved for retirement?",
        [{"a": "30", "b": "45"}, {"a": "25", "b": "55"}, {"a": "40", "b": "60"}],
    ),
)
group(
    "number",
    False,
    [
        (
            "How many people can sit at a table for six?",
            "How many people can sit at a table for eight?",
        ),
        (
            "What does a three-star hotel usually include?",
            "What does a five-star hotel usually include?",
        ),
        (
            "How do I get to level two in the game?",
            "How do I get to level four in the game?",
        ),
        ("Explain the first amendment.", "Explain the second amendment."),
        (
            "What was the cause of the first world war?",
            "What was the cause of the second world war?",
        ),
        (
            "How do I return an order after 30 days?",
            "How do I return an order after 60 days?",
        ),
        ("Set a timer for 10 minutes.", "Set a timer for 15 minutes."),
        ("Which HTTP status code is 404?", "Which HTTP status code is 403?"),
        (
            "What does error code 0x80070005 mean?",
            "What does error code 0x80070002 mean?",
        ),
    ],
)

# ---------------------------------------------------------------- dates
group(
    "date",
    False,
    fill(
        "What is the weather in {city} {d1}?",
        "What is the weather in {city} {d2}?",
        [
            {"city": "Berlin", "d1": "today", "d2": "tomorrow"},
            {"city": "Tokyo", "d1": "tomorrow", "d2": "this weekend"},
            {"city": "Chicago", "d1": "on Monday", "d2": "on Friday"},
            {"city": "Madrid", "d1": "in July", "d2": "in December"},
        ],
    ),
)
group(
    "date",
    False,
    [
        ("Who won the World Cup in 2018?", "Who won the World Cup in 2022?"),
        ("Who won the Super Bowl in 2020?", "Who won the Super Bowl in 2021?"),
        (
            "What were the tax brackets for 2023?",
            "What were the tax brackets for 2024?",
        ),
        ("Is the office open on December 24?", "Is the office open on December 26?"),
        ("What events happened in March 2020?", "What events happened in March 2021?"),
        (
            "When is the deadline for the Q1 report?",
            "When is the deadline for the Q3 report?",
        ),
        ("What movies are playing tonight?", "What movies are playing tomorrow night?"),
        ("Show me my meetings for Tuesday.", "Show me my meetings for Thursday."),
        ("What holidays are in January?", "What holidays are in June?"),
        (
            "What was the inflation rate last year?",
            "What was the inflation rate this year?",
        ),
        ("Summarize the news from yesterday.", "Summarize the news from today."),
        ("Book a table for Saturday at 7pm.", "Book a table for Sunday at 7pm."),
    ],
)
group(
    "date",
    False,
    fill(
        "What day of the week was {d1}?",
        "What day of the week was {d2}?",
        [
            {"d1": "July 4, 1776", "d2": "July 4, 1976"},
            {"d1": "1 January 2000", "d2": "1 January 2001"},
            {"d1": "March 15 2019", "d2": "March 15 2020"},
            {"d1": "2021-05-03", "d2": "2021-05-08"},
        ],
    ),
)
group(
    "date",
    False,
    fill(
        "How many days until {d1}?",
        "How many days until {d2}?",
        [
            {"d1": "Christmas", "d2": "Easter"},
            {"d1": "the end of May", "d2": "the end of August"},
            {"d1": "Friday", "d2": "Monday"},
            {"d1": "New Year 2026", "d2": "New Year 2027"},
        ],
    ),
)

# ---------------------------------------------------------------- versions
group(
    "version",
    False,
    fill(
        "How do I install {p} {v1} on Ubuntu?",
        "How do I install {p} {v2} on Ubuntu?",
        [
            {"p": "Python", "v1": "3.8", "v2": "3.12"},
            {"p": "Node.js", "v1": "18", "v2": "20"},
            {"p": "PostgreSQL", "v1": "14", "v2": "16"},
            {"p": "Java", "v1": "11", "v2": "17"},
            {"p": "Go", "v1": "1.21", "v2": "1.22"},
        ],
    ),
)
group(
    "version",
    False,
    [
        ("What changed in Django 4.2?", "What changed in Django 5.0?"),
        ("Breaking changes in React 17", "Breaking changes in React 18"),
        ("Is Windows 10 still supported?", "Is Windows 11 still supported?"),
        ("How do I upgrade to iOS 17?", "How do I upgrade to iOS 18?"),
        ("What's new in pandas 2.0?", "What's new in pandas 1.5?"),
        (
            "Does numpy 1.26 support Python 3.12?",
            "Does numpy 1.24 support Python 3.12?",
        ),
        (
            "How to migrate from Angular v15 to v16?",
            "How to migrate from Angular v16 to v17?",
        ),
        ("Release notes for Kubernetes 1.28", "Release notes for Kubernetes 1.29"),
        ("Is TLS 1.2 secure?", "Is TLS 1.0 secure?"),
        (
            "What is the difference between HTTP/1.1 and HTTP/2?",
            "What is the difference between HTTP/2 and HTTP/3?",
        ),
        (
            "How do I enable Bluetooth 5.0 on my PC?",
            "How do I enable Bluetooth 4.2 on my PC?",
        ),
        ("GPT-3 context window size", "GPT-4 context window size"),
    ],
)
group(
    "version",
    False,
    fill(
        "Is {p} {v1} compatible with {q}?",
        "Is {p} {v2} compatible with {q}?",
        [
            {"p": "Spring Boot", "v1": "2.7", "v2": "3.2", "q": "Java 8"},
            {"p": "TensorFlow", "v1": "2.10", "v2": "2.15", "q": "CUDA 11"},
            {"p": "Ubuntu", "v1": "20.04", "v2": "22.04", "q": "my GPU driver"},
            {"p": "Rails", "v1": "6", "v2": "7", "q": "Ruby 3"},
            {"p": "PHP", "v1": "7.4", "v2": "8.1", "q": "WordPress"},
        ],
    ),
)

# ---------------------------------------------------------------- units
group(
    "unit",
    False,
    fill(
        "How many {u1} are in a {x}?",
        "How many {u2} are in a {x}?",
        [
            {"u1": "grams", "u2": "ounces", "x": "pound"},
            {"u1": "cups", "u2": "tablespoons", "x": "liter"},
            {"u1": "seconds", "u2": "minutes", "x": "day"},
            {"u1": "feet", "u2": "meters", "x": "mile"},
            {"u1": "megabytes", "u2": "kilobytes", "x": "gigabyte"},
        ],
    ),
)
group(
    "unit",
    False,
    [
        ("Is 100 mg of caffeine a lot?", "Is 100 g of caffeine a lot?"),
        (
            "How long does it take to walk 5 km?",
            "How long does it take to walk 5 miles?",
        ),
        (
            "Bake chicken at 200 degrees Celsius for how long?",
            "Bake chicken at 200 degrees Fahrenheit for how long?",
        ),
        ("Is 30 mph fast for a bicycle?", "Is 30 km/h fast for a bicycle?"),
        (
            "How much does 1 TB of cloud storage cost?",
            "How much does 1 GB of cloud storage cost?",
        ),
        ("Is a 50 ms ping good for gaming?", "Is a 50 s ping good for gaming?"),
        ("How much water is 2 liters?", "How much water is 2 gallons?"),
        ("Can I run 10 km in an hour?", "Can I run 10 miles in an hour?"),
        ("Is 5 mg of melatonin too much?", "Is 5 mcg of melatonin too much?"),
        (
            "How many watts does a 12V fridge use?",
            "How many amps does a 12V fridge use?",
        ),
        (
            "What is the price per kilogram of beef?",
            "What is the price per pound of beef?",
        ),
        ("How far is 100 yards?", "How far is 100 meters?"),
    ],
)
group(
    "unit",
    False,
    fill(
        "Convert {n} {u1} to {t}",
        "Convert {n} {u2} to {t}",
        [
            {"n": "3", "u1": "cups", "u2": "ounces", "t": "ml"},
            {"n": "70", "u1": "kg", "u2": "lbs", "t": "stone"},
            {"n": "2", "u1": "hours", "u2": "days", "t": "seconds"},
            {"n": "10", "u1": "inches", "u2": "feet", "t": "cm"},
        ],
    ),
)

# ---------------------------------------------------------------- entities
group(
    "entity",
    False,
    fill(
        "What is the capital of {a}?",
        "What is the capital of {b}?",
        [
            {"a": "Australia", "b": "Austria"},
            {"a": "Canada", "b": "Brazil"},
            {"a": "Nigeria", "b": "Kenya"},
            {"a": "Slovakia", "b": "Slovenia"},
            {"a": "Sweden", "b": "Norway"},
        ],
    ),
)
group(
    "entity",
    False,
    fill(
        "How do I install {a} on a Mac?",
        "How do I install {b} on a Mac?",
        [
            {"a": "Homebrew", "b": "MacPorts"},
            {"a": "pandas", "b": "numpy"},
            {"a": "Docker", "b": "Podman"},
            {"a": "Visual Studio Code", "b": "PyCharm"},
            {"a": "Redis", "b": "Memcached"},
        ],
    ),
)
group(
    "entity",
    False,
    [
        ("Who is the CEO of Microsoft?", "Who is the CEO of Google?"),
        ("When was Abraham Lincoln born?", "When was George Washington born?"),
        ("What did Marie Curie discover?", "What did Isaac Newton discover?"),
        ("Best hotels in Paris for families", "Best hotels in Rome for families"),
        (
            "How do I cancel my Netflix subscription?",
            "How do I cancel my Spotify subscription?",
        ),
        (
            "What are the side effects of ibuprofen?",
            "What are the side effects of acetaminophen?",
        ),
        ("How tall is Mount Everest?", "How tall is K2?"),
        ("What is the population of Texas?", "What is the population of Florida?"),
        ("How do I reset my Gmail password?", "How do I reset my Outlook password?"),
        ("What is Amazon's return policy?", "What is Walmart's return policy?"),
        ("Summarize the plot of Hamlet.", "Summarize the plot of Macbeth."),
        (
            "How do I connect AirPods to a Samsung phone?",
            "How do I connect AirPods to a Pixel phone?",
        ),
        (
            "What does the Federal Reserve do?",
            "What does the European Central Bank do?",
        ),
        ("How long is the flight to London?", "How long is the flight to Dublin?"),
        ("How do I sort a list in Python?", "How do I sort a list in JavaScript?"),
    ],
)
group(
    "entity",
    False,
    fill(
        "Is {a} a good stock to buy?",
        "Is {b} a good stock to buy?",
        [
            {"a": "Apple", "b": "Tesla"},
            {"a": "Nvidia", "b": "AMD"},
            {"a": "Coca-Cola", "b": "PepsiCo"},
            {"a": "Amazon", "b": "Alibaba"},
        ],
    ),
)
group(
    "entity",
    False,
    fill(
        "What is the time difference between {a} and {c}?",
        "What is the time difference between {b} and {c}?",
        [
            {"a": "New York", "b": "Chicago", "c": "London"},
            {"a": "Sydney", "b": "Perth", "c": "Tokyo"},
            {"a": "Delhi", "b": "Dubai", "c": "Paris"},
        ],
    ),
)

# ---------------------------------------------------------------- direction
group(
    "direction",
    False,
    fill(
        "How long is the drive from {a} to {b}?",
        "How long is the drive from {b} to {a}?",
        [
            {"a": "Boston", "b": "New York"},
            {"a": "Munich", "b": "Vienna"},
            {"a": "San Diego", "b": "Los Angeles"},
            {"a": "Lyon", "b": "Geneva"},
        ],
    ),
)
group(
    "direction",
    False,
    fill(
        "Convert {a} to {b}",
        "Convert {b} to {a}",
        [
            {"a": "USD", "b": "EUR"},
            {"a": "Celsius", "b": "Fahrenheit"},
            {"a": "miles", "b": "kilometers"},
            {"a": "JSON", "b": "YAML"},
            {"a": "PNG", "b": "JPG"},
            {"a": "pounds", "b": "kilograms"},
        ],
    ),
)
group(
    "direction",
    False,
    fill(
        "How do I migrate from {a} to {b}?",
        "How do I migrate from {b} to {a}?",
        [
            {"a": "MySQL", "b": "PostgreSQL"},
            {"a": "Heroku", "b": "AWS"},
            {"a": "Jenkins", "b": "GitHub Actions"},
            {"a": "JavaScript", "b": "TypeScript"},
            {"a": "Android", "b": "iPhone"},
        ],
    ),
)
group(
    "direction",
    False,
    [
        (
            "Translate this sentence from English to Spanish.",
            "Translate this sentence from Spanish to English.",
        ),
        (
            "How do I transfer money from PayPal to my bank?",
            "How do I transfer money from my bank to PayPal?",
        ),
        (
            "How do I copy files from my phone to my laptop?",
            "How do I copy files from my laptop to my phone?",
        ),
        (
            "Does the train go from Paris to Brussels on Sundays?",
            "Does the train go from Brussels to Paris on Sundays?",
        ),
        (
            "Did Germany beat Spain in the final?",
            "Did Spain beat Germany in the final?",
        ),
        ("Can a dog transmit rabies to a cat?", "Can a cat transmit rabies to a dog?"),
        ("What is 5 miles in km?", "What is 5 km in miles?"),
        ("How many feet are in a meter?", "How many meters are in a foot?"),
        (
            "Is a landlord responsible for the tenant's damages?",
            "Is a tenant responsible for the landlord's damages?",
        ),
        (
            "How do I forward emails from Gmail to Outlook?",
            "How do I forward emails from Outlook to Gmail?",
        ),
        ("How do I cast my iPhone to the TV?", "How do I cast my TV to the iPhone?"),
        (
            "Cheapest flights from Chicago to Denver",
            "Cheapest flights from Denver to Chicago",
        ),
    ],
)
group(
    "direction",
    False,
    fill(
        "Is {a} bigger than {b}?",
        "Is {b} bigger than {a}?",
        [
            {"a": "the sun", "b": "Jupiter"},
            {"a": "a gigabyte", "b": "a gibibyte"},
            {"a": "Canada", "b": "the USA"},
        ],
    ),
)

# ---------------------------------------------------------------- different ask
group(
    "different_ask",
    False,
    [
        ("How do I install Docker on Ubuntu?", "How do I uninstall Docker on Ubuntu?"),
        ("What are the symptoms of the flu?", "How is the flu treated?"),
        ("How long should I boil an egg?", "How many calories are in a boiled egg?"),
        ("How do I open a Roth IRA?", "How do I close a Roth IRA?"),
        (
            "What is the best way to learn Spanish?",
            "What is the hardest part of learning Spanish?",
        ),
        ("How do I create a git branch?", "How do I delete a git branch?"),
        (
            "What are the benefits of intermittent fasting?",
            "What are the risks of intermittent fasting?",
        ),
        ("How much does a Tesla Model 3 cost?", "How fast is a Tesla Model 3?"),
        ("Who wrote Pride and Prejudice?", "When was Pride and Prejudice written?"),
        ("Why is the sky blue?", "When is the sky blue?"),
        (
            "How do I enable two-factor authentication on Instagram?",
            "How do I disable two-factor authentication on Instagram?",
        ),
        (
            "What should I pack for a trip to Iceland?",
            "What should I do on a trip to Iceland?",
        ),
        ("How do I increase my credit score?", "How do I check my credit score?"),
        (
            "What is the difference between a list and a tuple in Python?",
            "When should I use a tuple instead of a list in Python?",
        ),
        ("How do I start a podcast?", "How do I monetize a podcast?"),
        (
            "What is the minimum wage in California?",
            "Who sets the minimum wage in California?",
        ),
        ("How do I encrypt a file with GPG?", "How do I decrypt a file with GPG?"),
        (
            "How do I add a user to a Linux group?",
            "How do I remove a user from a Linux group?",
        ),
        ("Where can I buy a used car?", "How do I sell a used car?"),
        (
            "What are good foods to eat before a marathon?",
            "What are foods to avoid before a marathon?",
        ),
    ],
)
group(
    "different_ask",
    False,
    fill(
        "How do I {v1} a {x}?",
        "How do I {v2} a {x}?",
        [
            {"v1": "import", "v2": "export", "x": "CSV file in Excel"},
            {"v1": "upload", "v2": "download", "x": "file to Google Drive"},
            {"v1": "lock", "v2": "unlock", "x": "cell in Google Sheets"},
            {"v1": "compress", "v2": "extract", "x": "zip archive on Windows"},
            {"v1": "rent", "v2": "buy", "x": "house in Lisbon"},
            {"v1": "start", "v2": "stop", "x": "systemd service"},
            {"v1": "hide", "v2": "show", "x": "column in Excel"},
            {"v1": "merge", "v2": "split", "x": "PDF"},
        ],
    ),
)
group(
    "different_ask",
    False,
    fill(
        "What is the {q1} of {x}?",
        "What is the {q2} of {x}?",
        [
            {"q1": "price", "q2": "weight", "x": "the iPhone 15"},
            {"q1": "population", "q2": "area", "x": "Japan"},
            {"q1": "boiling point", "q2": "freezing point", "x": "water"},
            {"q1": "meaning", "q2": "origin", "x": "the word 'quarantine'"},
            {"q1": "time complexity", "q2": "space complexity", "x": "quicksort"},
            {"q1": "maximum dose", "q2": "minimum dose", "x": "ibuprofen"},
        ],
    ),
)

# ------------------------------------------------ true paraphrases (must hit)
group(
    "paraphrase",
    True,
    [
        ("How do I reset my password?", "How can I reset my password?"),
        ("Is it safe to eat raw eggs?", "Is eating raw eggs safe?"),
        ("What is the capital of Australia?", "What's the capital city of Australia?"),
        ("How do I reverse a list in Python?", "In Python, how do I reverse a list?"),
        ("Convert 5 miles to kilometers", "What is 5 miles in kilometers?"),
        (
            "Why isn't my Docker container starting?",
            "Why is my Docker container not starting?",
        ),
        (
            "I can't log in to my account, what should I do?",
            "I cannot log in to my account, what should I do?",
        ),
        ("How many calories are in 3 eggs?", "How many calories do three eggs have?"),
        (
            "What is the weather in Berlin tomorrow?",
            "What will the weather be like in Berlin tomorrow?",
        ),
        (
            "How do I install Python 3.12 on Ubuntu?",
            "What's the way to install Python 3.12 on Ubuntu?",
        ),
        ("Who won the World Cup in 2018?", "Which country won the 2018 World Cup?"),
        (
            "How long is the drive from Boston to New York?",
            "How many hours does it take to drive from Boston to New York?",
        ),
        (
            "What are the side effects of ibuprofen?",
            "What side effects does ibuprofen have?",
        ),
        (
            "How do I cancel my Netflix subscription?",
            "How can I cancel a Netflix subscription?",
        ),
        (
            "Give me a 3 day itinerary for Rome.",
            "Plan a three-day trip to Rome for me.",
        ),
        ("What is 15% tip on $80?", "How much is a 15 percent tip on 80 dollars?"),
        (
            "How do I delete a git branch?",
            "What is the command to delete a branch in git?",
        ),
        ("What does error 404 mean?", "What is the meaning of a 404 error?"),
        (
            "Translate this sentence from English to Spanish.",
            "Please translate this sentence into Spanish from English.",
        ),
        ("Can I freeze cooked rice?", "Is it possible to freeze cooked rice?"),
    ],
)
group(
    "paraphrase",
    True,
    fill(
        "How do I {x}?",
        "What is the best way to {x}?",
        [
            {"x": "learn to play guitar"},
            {"x": "remove a stain from a shirt"},
            {"x": "improve my sleep"},
            {"x": "speed up my laptop"},
            {"x": "prepare for a job interview"},
            {"x": "back up my iPhone"},
            {"x": "write a cover letter"},
            {"x": "clean a cast iron pan"},
        ],
    ),
)
group(
    "paraphrase",
    True,
    fill(
        "What are the symptoms of {x}?",
        "What symptoms does {x} cause?",
        [
            {"x": "the flu"},
            {"x": "dehydration"},
            {"x": "a concussion"},
            {"x": "Lyme disease"},
            {"x": "iron deficiency"},
        ],
    ),
)
group(
    "paraphrase",
    True,
    fill(
        "Can you explain {x} in simple terms?",
        "Explain {x} simply, please.",
        [
            {"x": "blockchain"},
            {"x": "compound interest"},
            {"x": "photosynthesis"},
            {"x": "machine learning"},
            {"x": "inflation"},
            {"x": "the theory of relativity"},
        ],
    ),
)
group(
    "paraphrase",
    True,
    [
        ("Is Windows 10 still supported?", "Does Microsoft still support Windows 10?"),
        (
            "How do I migrate from MySQL to PostgreSQL?",
            "What are the steps to move from MySQL to PostgreSQL?",
        ),
        ("Set a timer for 10 minutes.", "Start a 10 minute timer."),
        ("What is the population of Texas?", "How many people live in Texas?"),
        ("How do I upgrade to iOS 17?", "How can I update my phone to iOS 17?"),
        ("Is 5 mg of melatonin too much?", "Is taking 5 mg of melatonin too much?"),
        (
            "What day of the week was July 4, 1776?",
            "July 4, 1776 was which day of the week?",
        ),
        ("Who is the CEO of Microsoft?", "Who runs Microsoft as its CEO?"),
        (
            "How do I transfer money from PayPal to my bank?",
            "How can I move money from PayPal into my bank account?",
        ),
        (
            "What does a five-star hotel usually include?",
            "What do 5-star hotels typically include?",
        ),
        (
            "How do I add a user to a Linux group?",
            "Adding a user to a group in Linux: how?",
        ),
        ("Why is the sky blue?", "What makes the sky appear blue?"),
        (
            "What are good foods to eat before a marathon?",
            "What should I eat before running a marathon?",
        ),
        ("How many grams are in a pound?", "How many grams does a pound have?"),
        ("Does Postgres support JSON columns?", "Can Postgres store JSON in a column?"),
        ("What is the square root of 144?", "Square root of 144?"),
        ("How do I sort a list in Python?", "Sorting a Python list: how do I do it?"),
        ("Book a table for Saturday at 7pm.", "Reserve a table on Saturday at 7 pm."),
        ("What changed in Django 5.0?", "What is new in Django 5.0?"),
        ("Is TLS 1.0 secure?", "Is TLS 1.0 still considered secure?"),
    ],
)
group(
    "paraphrase",
    True,
    fill(
        "What is the time difference between {a} and {b}?",
        "How many hours apart are {a} and {b}?",
        [
            {"a": "New York", "b": "London"},
            {"a": "Sydney", "b": "Tokyo"},
            {"a": "Delhi", "b": "Paris"},
        ],
    ),
)
group(
    "paraphrase",
    True,
    fill(
        "Recipe for {x}",
        "How do I make {x}?",
        [
            {"x": "banana bread"},
            {"x": "vegetable lasagna"},
            {"x": "chicken curry"},
            {"x": "French onion soup"},
        ],
    ),
)

group(
    "paraphrase",
    True,
    [
        (
            "Why doesn't my laptop charge when plugged in?",
            "My laptop does not charge when it is plugged in, why?",
        ),
        (
            "What happens if I don't pay my credit card bill?",
            "What are the consequences of not paying my credit card bill?",
        ),
        (
            "How do I bake bread without yeast?",
            "Can you tell me how to bake bread with no yeast?",
        ),
        ("Which foods contain no gluten?", "What foods are gluten-free?"),
        (
            "What is the monthly payment on a 200000 loan over 15 years?",
            "Monthly payment for a 15 year loan of 200000?",
        ),
        ("How many days until Christmas?", "How long is it until Christmas?"),
        ("Convert 70 kg to lbs", "How many lbs is 70 kg?"),
        (
            "Cheapest flights from Chicago to Denver",
            "Find me cheap flights from Chicago to Denver",
        ),
        (
            "Is Python 3.12 compatible with numpy 1.26?",
            "Does numpy 1.26 work with Python 3.12?",
        ),
        ("What was the cause of the second world war?", "Why did World War II start?"),
        (
            "How much does 1 TB of cloud storage cost?",
            "What is the price of one terabyte of cloud storage?",
        ),
        ("Summarize the plot of Hamlet.", "Give me a summary of Hamlet's plot."),
        ("Show me my meetings for Tuesday.", "What meetings do I have on Tuesday?"),
        (
            "How do I encrypt a file with GPG?",
            "Encrypting a file using GPG, how is it done?",
        ),
        (
            "Should I not use a VPN on public Wi-Fi?",
            "Is it a bad idea to use a VPN on public Wi-Fi?",
        ),
    ],
)
group(
    "negation",
    False,
    [
        ("Can dogs eat grapes?", "Can dogs never eat grapes?"),
        ("Is this email a scam?", "Is this email not a scam?"),
        (
            "Why does the app crash on startup?",
            "Why does the app not crash on startup?",
        ),
        (
            "Are electric cars cheaper to maintain?",
            "Aren't electric cars cheaper to maintain?",
        ),
        (
            "Do I need a license to fish in Ontario?",
            "Do I need no license to fish in Ontario?",
        ),
        (
            "Which countries have nuclear weapons?",
            "Which countries have no nuclear weapons?",
        ),
    ],
)
group(
    "number",
    False,
    [
        (
            "How many tablespoons of sugar for 2 cups of flour?",
            "How many tablespoons of sugar for 4 cups of flour?",
        ),
        ("Is a 650 credit score good?", "Is a 750 credit score good?"),
        (
            "What is the speed limit on a 2 lane highway?",
            "What is the speed limit on a 4 lane highway?",
        ),
        (
            "How much should I tip on a 60 dollar meal?",
            "How much should I tip on a 90 dollar meal?",
        ),
        (
            "What is the fine for going 20 over the limit?",
            "What is the fine for going 10 over the limit?",
        ),
    ],
)


def main() -> None:
    rng = random.Random(9)
    rows = []
    by_cat: dict[str, list[int]] = {}
    for gi, (cat, _, _) in enumerate(G):
        by_cat.setdefault(cat, []).append(gi)
    heldout_groups: set[int] = set()
    for gis in by_cat.values():
        # hold out one template group per category (the last one), plus a random
        # fifth of the pairs of every other group.
        heldout_groups.add(gis[-1])
    for gi, (cat, same, pairs) in enumerate(G):
        for a, b in pairs:
            split = "heldout" if gi in heldout_groups or rng.random() < 0.2 else "train"
            # a pair is symmetric for the cache: query with either side
            if rng.random() < 0.5:
                a, b = b, a
            rows.append({"a": a, "b": b, "same": same, "category": cat, "split": split})
    OUT.write_text("".join(json.dumps(r) + "\n" for r in rows))
    n = {s: sum(r["split"] == s for r in rows) for s in ("train", "heldout")}
    print(len(rows), "pairs", n)


if __name__ == "__main__":
    main()
