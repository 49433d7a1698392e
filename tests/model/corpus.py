"""Small hand-written corpora for the model tier: paraphrases, unrelated topics, prose vs noise."""

from __future__ import annotations

import random

# Each pair says the same thing twice; MiniLM puts the two well above 0.9 cosine similarity.
PARAPHRASE_PAIRS = [
    (
        "The cat sat on the warm mat near the kitchen window.",
        "A cat was sitting on the warm mat by the kitchen window.",
    ),
    (
        "The central bank raised interest rates by half a percentage point to fight inflation.",
        "To fight inflation, the central bank raised interest rates by half a percentage point.",
    ),
    (
        "Photosynthesis lets green plants turn sunlight, water and carbon dioxide into sugar.",
        "Green plants use photosynthesis to turn sunlight, water and carbon dioxide into sugar.",
    ),
    (
        "The football match was cancelled because of heavy snow on the pitch.",
        "Because of heavy snow on the pitch, the football match was cancelled.",
    ),
    (
        "Regular exercise lowers the risk of heart disease and improves sleep.",
        "Exercising regularly improves sleep and lowers the risk of heart disease.",
    ),
    (
        "The new smartphone has a larger battery and a faster processor than last year's model.",
        "Compared with last year's model, the new smartphone has a faster processor and a larger battery.",
    ),
]

UNRELATED = [
    "Volcanic eruptions release ash and sulfur dioxide high into the stratosphere.",
    "The recipe calls for two cups of flour, a pinch of salt and three eggs.",
    "Medieval castles were built with thick stone walls and narrow arrow slits.",
    "Python lists are mutable sequences that can hold objects of different types.",
    "The violinist practised the concerto for six hours before the premiere.",
    "Coral reefs host about a quarter of all marine species despite covering little of the ocean floor.",
    "The tax form must be submitted before the end of April to avoid a penalty.",
    "Jupiter's Great Red Spot is a storm larger than the entire Earth.",
    "Knitting a wool scarf takes patience, two needles and a good pattern.",
    "The train to the airport leaves every fifteen minutes from platform four.",
]

PROSE = [
    "The museum opens at nine in the morning and closes at five in the evening.",
    "She walked to the market to buy fresh bread, cheese and a bag of apples.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The children played football in the park until it started to rain.",
    "He read the newspaper while drinking a cup of coffee in the kitchen.",
    "The city council approved a plan to build a new library next year.",
]


def keyboard_mash(n: int, seed: int = 0) -> list[str]:
    """Random letter strings with spaces: what no language model finds likely."""
    rng = random.Random(seed)
    letters = "qwertyuiopasdfghjklzxcvbnm"
    return [
        " ".join("".join(rng.choice(letters) for _ in range(rng.randint(3, 8))) for _ in range(12))
        for _ in range(n)
    ]


DENSE_TOPIC = [  # many ways of saying nearly the same thing: a dense, redundant cluster
    f"Buy cheap {item} online today with free shipping and a discount."
    for item in (
        "shoes",
        "sneakers",
        "boots",
        "sandals",
        "trainers",
        "slippers",
        "loafers",
        "heels",
        "running shoes",
        "hiking boots",
        "flip flops",
        "clogs",
        "moccasins",
        "sport shoes",
        "leather shoes",
        "canvas shoes",
        "rain boots",
        "snow boots",
        "dress shoes",
        "kids shoes",
    )
]

SPARSE_TOPICS = [  # varied science sentences: a sparse cluster
    "Mitochondria produce most of the chemical energy that powers a cell.",
    "Plate tectonics explains how continents drift across the mantle.",
    "A neutron star can spin hundreds of times per second.",
    "Enzymes lower the activation energy of biochemical reactions.",
    "The speed of light in vacuum is about three hundred thousand kilometres per second.",
    "Glaciers carve U-shaped valleys as they slowly move downhill.",
    "Vaccines train the immune system to recognise a pathogen.",
    "Black holes bend light so strongly that nothing escapes their event horizon.",
    "The periodic table orders elements by their atomic number.",
    "Bees communicate the location of flowers through a waggle dance.",
    "Entropy in an isolated system never decreases over time.",
    "DNA is a double helix of two complementary strands.",
    "Earthquakes release energy stored along geological faults.",
    "Antibiotics do not work against viral infections.",
    "Saturn's rings are made mostly of ice particles.",
    "Photosynthesis in algae produces much of the oxygen we breathe.",
    "Superconductors carry current without resistance below a critical temperature.",
    "The human brain contains roughly eighty-six billion neurons.",
    "Ocean currents move heat from the equator towards the poles.",
    "Quantum entanglement links the states of distant particles.",
]
