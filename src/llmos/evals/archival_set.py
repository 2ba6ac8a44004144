"""The labelled set of the `archival` task: passages, and queries with the passages answering them.

Written for llmos: 40 short passages on varied topics (each id is its index,
0-based) and 20 queries, each naming every passage that answers it. Several
queries are phrased with filler words ("and", "the", "of", "in") that many
passages share, so a ranking that lets common words win ranks wrong passages
first; some name their topic with words the passages do not use (a cat is a
"pet"), so a pure keyword match misses.
"""

from __future__ import annotations

PASSAGES: list[str] = [
    # 0-4 animals and pets
    "Cats sleep for twelve to sixteen hours a day and groom themselves with rough tongues.",
    "Our dog Rufus needs two walks a day; he is a beagle who loves chasing squirrels.",
    "Goldfish can live for over ten years in a large, well-filtered aquarium.",
    "Parrots such as the African grey can learn hundreds of words and mimic voices.",
    "Rabbits kept indoors need hay, fresh greens and room to hop every day.",
    # 5-9 landmarks and travel
    "The Eiffel Tower is in Paris and was completed in 1889 for the World's Fair.",
    "The Great Wall of China stretches for thousands of kilometres across the north.",
    "Machu Picchu is an Inca citadel high in the Andes of Peru.",
    "The Colosseum in Rome could hold tens of thousands of spectators for games.",
    "Kyoto has more than a thousand temples, and the maples turn red in November.",
    # 10-14 cooking
    "To bake sourdough, feed the starter the night before and let the dough rise slowly.",
    "A good risotto needs arborio rice, warm stock added a ladle at a time, and patience.",
    "Pesto is made from basil, pine nuts, garlic, parmesan and olive oil.",
    "Braise beef cheeks for three hours in red wine until they fall apart.",
    "Fresh pasta dough is just flour and eggs, kneaded until smooth and rested.",
    # 15-19 programming
    "Python's list comprehensions build a new list from an iterable in one expression.",
    "A SQL index speeds up lookups on a column at the cost of slower writes.",
    "Git rebase replays your commits on top of another branch to keep history linear.",
    "Rust's borrow checker prevents data races by enforcing ownership rules at compile time.",
    "A hash map gives constant-time average lookups by hashing keys into buckets.",
    # 20-24 health and fitness
    "Running three times a week improves heart health and lowers resting pulse.",
    "Adults need seven to nine hours of sleep for memory and mood.",
    "Stretching after exercise helps muscles recover and keeps joints flexible.",
    "Drinking enough water matters most in hot weather and during long workouts.",
    "Strength training twice a week keeps bones dense as people age.",
    # 25-29 space and astronomy
    "Mars has the tallest volcano in the solar system, Olympus Mons.",
    "A light-year is the distance light travels in one year, about 9.46 trillion kilometres.",
    "Jupiter's Great Red Spot is a storm larger than the Earth.",
    "The Moon always shows the same face to the Earth because of tidal locking.",
    "Saturn's rings are made mostly of ice and rock fragments.",
    # 30-34 history
    "The printing press of Johannes Gutenberg spread books across Europe after 1450.",
    "The Roman Empire in the west ended in 476 when Odoacer deposed the last emperor.",
    "The Apollo 11 crew landed on the Moon in July 1969.",
    "The Berlin Wall fell in November 1989 and Germany reunified the next year.",
    "The Magna Carta was sealed in 1215 and limited the power of the English king.",
    # 35-39 music and gardening
    "Bach wrote the Brandenburg Concertos and hundreds of church cantatas.",
    "A guitar has six strings, usually tuned E A D G B E.",
    "Tomatoes need full sun, regular watering and support as they grow tall.",
    "Compost made of kitchen scraps and leaves feeds the soil of a vegetable garden.",
    "Roses should be pruned in late winter just above an outward-facing bud.",
]

#: (query, ids of the passages that answer it)
QUERIES: list[tuple[str, list[int]]] = [
    ("household pets and animals", [0, 1, 2, 3, 4]),
    ("the care of a dog", [1]),
    ("famous landmarks of the world", [5, 6, 7, 8]),
    ("when was the Eiffel Tower built", [5]),
    ("recipes and cooking with pasta and rice", [11, 14]),
    ("how to make bread at home", [10]),
    ("version control and branches", [17]),
    ("data structures for fast lookups", [16, 19]),
    ("memory safety in a programming language", [18]),
    ("exercise and the health of the heart", [20]),
    ("how much sleep do people need", [21, 0]),
    ("planets of the solar system", [25, 27, 29]),
    ("how far is a light-year", [26]),
    ("the first people on the Moon", [32]),
    ("the end of the Roman empire", [31]),
    ("the fall of the Berlin Wall and German reunification", [33]),
    ("a composer of baroque music", [35]),
    ("growing vegetables in the garden", [37, 38]),
    ("birds that can talk", [3]),
    ("ancient ruins in South America", [7]),
]
