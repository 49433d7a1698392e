#!/usr/bin/env python3
"""Build `examples/data/production/`: the input of `examples/production.yaml`.

The quickstart sample stays as it is (its documented numbers do not move): `docs/` is a link to
`../sample`, and three small folders are added beside it, one per source (the pipeline derives
the source from the folder name, `input.sourceFromPath`):

* `translations/` -- 60 documents in 30 languages: Django 5.1.4's own translations of its
  messages (BSD-3-Clause; `tests/model/data/django_translations.jsonl`, built by
  `scripts/build-lid-fixture.py` from the PyPI wheel), two documents per language;
* `support/` -- 24 support e-mails written from templates, with planted personal data (names,
  e-mail addresses, phone numbers, Luhn-valid card numbers, IBANs, an AWS key) (CC0-1.0);
* `forum/` -- 10 forum posts from templates (CC0-1.0): two quote a question and answer of the
  tiny evaluation set `examples/models/benchmarks/tiny-eval.jsonl` (a planted benchmark leak),
  two carry the licence value `proprietary`.

Every file has the sample's columns (`doc_id`, `text`, `source`, `licence`). Deterministic:
`python examples/build_production.py` rewrites the same bytes; `--check` compares.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import string
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
OUT = HERE / "data" / "production"
TRANSLATIONS = HERE.parent / "tests" / "model" / "data" / "django_translations.jsonl"
BENCHMARK = HERE / "models" / "benchmarks" / "tiny-eval.jsonl"
SEED = 20250101

NAMES = ["Maria Rossi", "John Carter", "Li Wei", "Ahmed Hassan", "Sofia Garcia", "Lukas Muller", "Amara Okafor",
         "Igor Petrov", "Ines Silva", "Kenji Sato", "Zoe Martin", "Omar Haddad"]
DOMAINS = ["gmail.com", "posteo.de", "outlook.fr", "mail.ru", "unimi.it", "acme-corp.io"]
ISSUES = [
    "my order arrived with a broken hinge and the replacement part has not been shipped yet",
    "I was charged twice for the same subscription this month and would like a refund",
    "the invoice shows the wrong company name and the tax number is missing",
    "the app logs me out every few minutes since the last update and I cannot finish my work",
    "the delivery was left at the wrong address even though the label was correct",
    "I would like to close my account and have all of my data deleted",
]


def luhn_card(rng: random.Random) -> str:
    body = "4" + "".join(rng.choice(string.digits) for _ in range(14))
    total = sum((d * 2 - 9 if d > 4 else d * 2) if i % 2 == 0 else d
                for i, d in enumerate(int(c) for c in reversed(body)))
    digits = body + str((10 - total % 10) % 10)
    return " ".join(digits[i:i + 4] for i in range(0, 16, 4))


def iban_de(rng: random.Random) -> str:
    bban = "".join(rng.choice(string.digits) for _ in range(18))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + "DE00")) % 97
    value = f"DE{check:02d}{bban}"
    return " ".join(value[i:i + 4] for i in range(0, len(value), 4))


FILLER = [
    "I have been a customer for several years and this is the first time something like this has happened.",
    "My neighbour had the same problem last spring, and it took the shop almost a month to sort it out.",
    "The chat assistant on your website could not help, because it kept sending me back to the start page.",
    "I tried calling the hotline twice on Monday, but both times the line was busy for more than an hour.",
    "It would help a lot if you could tell me when I can expect an answer, even a rough estimate.",
    "I attached two photos of the parcel and of the label, in case your colleagues need to see them.",
    "Please do not close the ticket automatically again, as happened with my previous request in May.",
    "If it is easier, I can also bring the product back to the store in the city centre on Saturday.",
    "I read the terms and conditions again, and as far as I can see the warranty still covers this.",
    "My daughter uses the same account on her tablet, so the problem may be linked to the second device.",
    "The confirmation message said that everything was fine, which is why I did not notice it earlier.",
    "I am travelling for work next week, so a reply by e-mail would suit me better than a phone call.",
    "Last time your colleague in the returns department was very kind and solved everything in a day.",
    "I would prefer a repair to a replacement, because I have already set everything up the way I like it.",
    "The tracking page has shown the same status for nine days now, without any change at all.",
    "I checked my bank statement this morning and the second payment is still listed as pending.",
]


def support_mail(i: int, rng: random.Random) -> str:
    name = NAMES[i % len(NAMES)]
    first, last = name.lower().split()
    email = f"{first}.{last}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}"
    phone = f"+44 20 {rng.randint(7000, 7999)} {rng.randint(1000, 9999)}"
    issue = ISSUES[i % len(ISSUES)]
    personal = [
        f"You can reach me at {phone} during the day, or by e-mail at {email}.",
        f"For the refund, please use my account {iban_de(rng)} at the usual bank.",
        f"I paid with the card {luhn_card(rng)} and the payment went through on the first attempt.",
        f"The server that sends the notifications is at {rng.randint(23, 212)}.{rng.randint(0, 255)}."
        f"{rng.randint(0, 255)}.{rng.randint(1, 254)}, if that helps your team to look into the logs.",
    ]
    if i % 8 == 3:
        personal.append("Our script used the key AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits)
                                                                for _ in range(16)) + " to upload the file.")
    sentences = rng.sample(personal, k=min(len(personal), 2 + i % 3)) + rng.sample(FILLER, k=6)
    rng.shuffle(sentences)
    return (f"Ticket {1000 + i}: {issue}. " + " ".join(sentences)
            + f" Best regards, {name} ({email}).")


FORUM = [
    "Has anyone here tried growing tomatoes on a balcony that faces north? I get about three hours of "
    "direct sun in the afternoon and the plants grow tall but produce very few fruits. I water them every "
    "morning and feed them once a week. Would a reflective wall help, or should I switch to herbs that "
    "need less light? Any advice from people who have done this in a similar climate would be welcome.",
    "After ten years with the same road bike I finally replaced the chain and the cassette, and the "
    "difference is remarkable. Shifting is quiet again and the bike feels lighter on the climbs. If your "
    "chain skips under load, measure it before you blame the derailleur: a worn chain wears the cogs, and "
    "then you have to replace both. A chain checker costs less than a new cassette and takes a minute.",
    "Our reading group is looking for a novel for the winter meetings. Last year we read three long "
    "books and everybody agreed that shorter ones lead to better discussions. We would like something "
    "published in the last twenty years, not too dark, and ideally translated from another language, "
    "because that brings up questions about the translation itself. Please post your suggestions below.",
    "I keep sourdough starter in the fridge and feed it once a week, but the bread has become very sour "
    "and the dough does not rise as much as it used to. Somebody told me to feed it twice before baking "
    "and to keep it at room temperature for a day. Is that the usual way to wake up a starter that has "
    "been cold for a long time, or is there a better method that bakers here would recommend?",
    "Quick question about the quiz night: someone asked \"{q}\" and the host said the answer was \"{a}\". "
    "We argued about it for the rest of the evening, so I am posting it here to settle the matter once "
    "and for all. Is that really the accepted answer, and where can we read more about it?",
    "For anyone preparing for the exam, here is a question from the practice sheet that confused me: "
    "{q} The answer key says {a} I still do not understand why, so if someone can explain the reasoning "
    "in simple words I would be very grateful, and I will share my notes in return.",
    "The community garden will open again in March. We need volunteers for the first weekend to repair "
    "the fence, clean the shed and prepare the beds for the new members. Bring gloves and a water bottle; "
    "tools are provided. Children are welcome if they stay with an adult. We will finish with a shared "
    "lunch at noon, so let us know if you can bring something to eat or drink.",
    "I am learning to play the piano as an adult and practise about twenty minutes every evening. My "
    "teacher says that slow practice with a metronome is the fastest way to improve, but it feels "
    "boring and I lose motivation. How do other adult learners keep practice interesting? I would love to "
    "hear which pieces or exercises helped you most during the first two years.",
    "Members only: the full transcript of last month's private workshop is below. Please do not share it "
    "outside the forum, because the speakers agreed to publish it here and nowhere else. The workshop "
    "covered the planning of small exhibitions, how to write the labels and how to light the rooms, with "
    "a long discussion about the cost of insurance for borrowed pieces and the paperwork it requires.",
    "Members only: notes from the committee meeting, which are not to be copied or published elsewhere. "
    "The committee discussed the budget for next year, the date of the summer party and the plan to "
    "renovate the kitchen of the club house. Members who want to comment on these plans can do so in "
    "this thread until the end of the month, when the committee will meet again to take a decision.",
]


def rows_translations() -> list[dict[str, str]]:
    data = [json.loads(line) for line in TRANSLATIONS.read_text(encoding="utf-8").splitlines()]
    out = []
    for lang in dict.fromkeys(r["lang"] for r in data):
        strings = [r["text"] for r in data if r["lang"] == lang and r["kind"] == "string"]
        paragraphs = [r["text"] for r in data if r["lang"] == lang and r["kind"] == "paragraph"]
        for k, text in enumerate((" ".join(strings[:20]), " ".join(paragraphs))):
            text = text if text.endswith((".", "!", "?", "。")) else text + "."
            out.append({"doc_id": f"tr-{lang}-{k}", "text": text, "source": f"django-5.1.4:locale/{lang}",
                        "licence": "BSD-3-Clause"})
    return out


def rows_support() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    return [{"doc_id": f"support-{i:03d}", "text": support_mail(i, rng), "source": f"ticket-{1000 + i}",
             "licence": "CC0-1.0"} for i in range(24)]


def rows_forum() -> list[dict[str, str]]:
    bench = [json.loads(line) for line in BENCHMARK.read_text(encoding="utf-8").splitlines()]
    out = []
    for i, template in enumerate(FORUM):
        text = template.format(q=bench[i]["question"], a=bench[i]["answer"]) if "{q}" in template else template
        licence = "proprietary" if template.startswith("Members only") else "CC0-1.0"
        out.append({"doc_id": f"forum-{i:03d}", "text": text, "source": f"thread-{i}", "licence": licence})
    return out


def build(out: Path) -> None:
    schema = pa.schema([(c, pa.string()) for c in ("doc_id", "text", "source", "licence")])
    for folder, rows in (("translations", rows_translations()), ("support", rows_support()),
                         ("forum", rows_forum())):
        (out / folder).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / folder / "part-00000.parquet",
                       compression="zstd")
    link = out / "docs"
    if not link.is_symlink():
        link.symlink_to(Path("..") / "sample", target_is_directory=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="build into a temp dir and compare")
    args = parser.parse_args()
    if not args.check:
        build(OUT)
        print(f"wrote {OUT}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp))
        for folder in ("translations", "support", "forum"):
            a = pq.read_table(Path(tmp) / folder / "part-00000.parquet")
            b = pq.read_table(OUT / folder / "part-00000.parquet")
            if not a.equals(b):
                print(f"{folder}: differs from the committed copy", file=sys.stderr)
                return 1
    print("examples/data/production matches its build")
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
