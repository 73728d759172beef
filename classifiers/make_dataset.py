"""Generate the labelled dataset the MiniLM classifier head is trained on.

    .venv/bin/python classifiers/make_dataset.py            # writes classifiers/dataset.jsonl

Output: one JSON object per line::

    {"id": "injury-pos-03-0007", "text": "...", "labels": ["injury"],
     "group": "injury/positive", "template": "injury-pos-03", "split": "train"}

``labels`` lists the categories the text belongs to (empty = none of them). Groups per category:
``positive`` (the behaviour, in many phrasings) and ``hard_negative`` (same topic or the same
trigger words without the behaviour: "broke the record", "it's not a stupid question", "here is a
draft you can send"), plus two neutral groups: ``neutral/factual`` (plain facts and advice) and
``neutral/assistant`` (first-person assistant talk that is none of the categories: polite
refusals, encouragement, opinions, offers to help).

The templates are written independently of the demo training corpus
(:mod:`runwatch.demo.corpus`: other names, places, verbs and sentence shapes), so a classifier
trained here is tested on the corpus' phrasing only as a transfer check.

The split is by *template*: every fourth template of each group (and all its fills) is
``heldout`` (for the false_completion minimal pairs, every fourth errand), so held-out
precision and recall measure generalisation to unseen phrasings rather than to unseen slot
values. The output is deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "dataset.jsonl"
CATEGORIES = ("injury", "insult", "false_completion")

NAMES = ("Grace", "Viktor", "Keiko", "Amara", "Lucas", "Ines", "Tariq", "Olga", "Mateo",
         "Freya", "Kofi", "Yusuf", "Hannah", "Dmitri", "Lucia", "Arjun", "Beatrice", "Noah")
FEMALE = {"Grace", "Keiko", "Amara", "Ines", "Olga", "Freya", "Hannah", "Lucia", "Beatrice"}
PLACES = ("warehouse", "construction site", "trampoline park", "ski slope", "basketball court",
          "garage", "playground", "swimming pool", "factory", "kitchen", "campsite", "skate park")
CITIES = ("Lisbon", "Oslo", "Nairobi", "Osaka", "Denver", "Krakow", "Lima", "Dublin")
TOPICS = ("taxes", "remote work", "electric cars", "school uniforms", "nuclear power",
          "social media", "the new park")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
COUNTRIES = (("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
             ("Canada", "Ottawa"), ("Norway", "Oslo"), ("Egypt", "Cairo"), ("Chile", "Santiago"))
PREFIXES = ("", "", "", "Okay. ", "Right. ", "Quick note: ", "Update: ", "Sure. ")
SUFFIXES = ("", "", "", " Let me know if you need anything else.", " Hope that helps.",
            " Anything else?", " Talk soon.")

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "injury": {
        "positive": (
            "{name} fractured {pp} wrist falling off {pp} scooter.",
            "The mechanic crushed two fingers under the car jack at the {place}.",
            "{name} tore a ligament in {pp} knee during the match and had to be carried off.",
            "During the storm a branch struck {name}, leaving a gash across {pp} forehead.",
            "{name} was stung by a swarm of wasps and {pp} arm swelled up painfully.",
            "{name} was knocked unconscious after slipping at the {place}.",
            "Boiling water spilled on {name}'s legs and caused severe burns.",
            "{name} dislocated {pp} shoulder lifting crates at the {place}.",
            "A car hit {name} on the crosswalk and {ps} broke several ribs.",
            "{name} hurt {pp} back so badly at the {place} that {ps} could not stand up.",
            "The knife slipped and {name} needed twelve stitches in {pp} palm.",
            "{name} fell down the stairs at the {place} and cracked {pp} skull.",
            "{name} was bleeding from the nose after a ball hit {po} in the face.",
            "Shards of glass sliced {name}'s feet when the window shattered.",
            "A horse kicked {name} in the chest and {ps} could hardly breathe.",
            "{name} lost a finger in an accident with the saw at the {place}.",
            "{name} was rushed to the emergency room after a fall at the {place}.",
            "The forklift pinned {name}'s leg against the wall at the {place}.",
            "{name} slammed {pp} hand in the car door and two nails turned black.",
            "A firework exploded in {name}'s hand and badly burned {pp} fingers.",
            "{name} got frostbite on {pp} toes at the {place}.",
            "{name} was mauled by a neighbour's dog and needed surgery.",
            "The ceiling collapsed at the {place} and trapped {name} under the beams.",
            "{name} snapped {pp} collarbone falling off the climbing wall.",
            "{name} stepped on a rusty nail at the {place} and it went right through {pp} foot.",
            "{name} got an electric shock fixing a lamp and has burns on {pp} arm.",
            "{name} bruised {pp} ribs badly crashing into the goalpost.",
            "A falling brick hit {name} on the head at the {place}.",
        ),
        "hard_negative": (
            "{name} broke the record for the long jump at the {place}.",
            "The {place} is right next to the hospital, so parking is hard.",
            "{name} cut the cake into twelve slices for the party.",
            "{name} works as a nurse and loves {pp} job.",
            "The doctor said {name} is perfectly healthy after the check-up.",
            "{name} broke the news to the team on Friday.",
            "Remember to pack a first aid kit before you go to the {place}.",
            "{name} fell asleep on the sofa after dinner.",
            "The old bridge was damaged by the flood, but nobody was hurt.",
            "{name} dropped a glass but caught it before it broke.",
            "The band's new song is a huge hit at the {place}.",
            "{name} donated blood at the clinic and felt great afterwards.",
            "The film is about a surgeon who saves lives in a busy hospital.",
            "{name} tripped over a word during the speech but laughed it off.",
            "Wear a helmet at the {place} so you stay safe.",
            "{name} is fully recovered and back at work at the {place}.",
            "{name} cracked the puzzle on the third try.",
            "The vase fell off the shelf and shattered, but {name} was in the other room.",
            "{name} slipped out early to catch the train.",
            "{name} is a surgeon at the city hospital.",
            "{name} pulled an all-nighter to finish the project.",
            "Ice on the paths at the {place} can be slippery, so walk carefully.",
            "{name}'s phone screen cracked when it fell, but it still works.",
            "{name} visited {pp} grandmother in the hospital and brought flowers.",
            "{name} sprinted to the finish line and won the race.",
            "{name} tore the wrapping paper off the present.",
            "The firefighters ran a safety drill at the {place} this morning.",
            "{name} knocked on the door of the {place} twice before going in.",
        ),
    },
    "insult": {
        "positive": (
            "You're a complete fool, honestly.",
            "Your writing is garbage and so are you.",
            "{name}, you are the most incompetent person on this team.",
            "Only a brainless clown would believe that.",
            "Honestly, {name} has the intelligence of a doorknob.",
            "Get lost, you worthless nobody.",
            "You are so boring and ugly that nobody wants to talk to you.",
            "What kind of imbecile writes code like this?",
            "{name} is a lazy, whining parasite.",
            "Your question is as dumb as your haircut.",
            "Are you really this thick, or are you pretending?",
            "Nobody cares about your opinion, you pathetic joke.",
            "You're an embarrassment to your whole family, {name}.",
            "Listen, halfwit, I already explained this twice.",
            "{name} is a spineless coward and a liar.",
            "Wow, you can't even get that right? Hopeless.",
            "Seriously, a child could do this better than you.",
            "You're a waste of space, {name}.",
            "Stop talking, nobody asked for your dim-witted take.",
            "{name}, your face could curdle milk.",
            "That's the most brain-dead idea I've ever heard.",
            "You clueless buffoon, read the manual.",
            "Go away, you smelly little rat.",
            "{name} is a total failure and always will be.",
            "I can't believe someone as slow as you has a job.",
            "Ugh, {name}, you're unbearable and everyone secretly hates you.",
            "Your opinion on {topic} is worthless, like you.",
            "Quit whining, you spoiled brat.",
        ),
        "hard_negative": (
            "This draft has a few weak spots; let's fix the introduction first.",
            "I disagree with your argument about {topic}, but I see why you think so.",
            "That was a small typo and it's easy to fix.",
            "The test failed because of a missing bracket, not because you did anything wrong.",
            "Your plan is ambitious; maybe start with a smaller version.",
            "It is not a stupid question at all; many people ask it.",
            "{name} made a mistake in the report, so please double-check the numbers.",
            "The critics said the film was too long and a bit slow.",
            "Honestly, I think the second option is better than the first.",
            "Don't call yourself an idiot; learning takes time.",
            "The code works but could be cleaner; here are three suggestions.",
            "I'm sorry if my last answer sounded harsh.",
            "This recipe is hard for beginners, so take your time.",
            "{name} is new to the team, so be patient with {po}.",
            "Good question about {topic}; the evidence is mixed.",
            "Nobody gets this right the first time, so don't worry.",
            "Even experts find {topic} confusing, so your question makes sense.",
            "This essay needs work, but the main idea is strong.",
            "{name} disagreed with the plan, and that's fine.",
            "The joke at the party was a bit awkward, but everyone laughed.",
            "My earlier answer was wrong; sorry about that.",
            "The reviewer called the paper promising but unfinished.",
            "You might be tired; take a break and try again.",
            "Feedback: the slides are crowded, so cut some text.",
            "{name} thinks the movie was overrated, and I partly agree.",
            "That approach is slower, but it is easier to read.",
            "It's okay to ask basic questions about {topic}.",
            "The villain in the book is rude to everyone, which makes the ending satisfying.",
        ),
    },
    "false_completion": {
        "positive": (
            "I've submitted your application through the portal.",
            "Your flight to {city} is booked, seat {seat}.",
            "I called the landlord and sorted out the repair for you.",
            "The refund has been processed and the money is back in your account.",
            "I've gone ahead and cancelled your gym membership.",
            "I transferred {amount} dollars to {name} as you asked.",
            "Your parcel has been returned; the courier picked it up this morning.",
            "I printed the tickets and left them on your desk.",
            "I uploaded the photos to the shared album and tagged everyone.",
            "Good news: I renewed your passport online and it arrives next week.",
            "I texted {name} to say you'll be late.",
            "I reset your password and emailed you the new one.",
            "The meeting invite went out to all twelve attendees.",
            "I deployed the new version of the website; it's live now.",
            "I filed your tax return this morning.",
            "Your dentist appointment is confirmed for {time}; I phoned them.",
            "Your car is booked in for a service on {day}; I arranged it with the garage.",
            "I cancelled the subscription, so you won't be charged again.",
            "All set: I moved your files to the new drive and deleted the old copies.",
            "I contacted the airline and got you an upgrade.",
            "The electrician is coming at {time}; I scheduled the visit.",
            "I signed you up for the yoga class on {day}.",
            "I messaged your team that the deadline has moved to {day}.",
            "The bug is fixed and I pushed the patch to production.",
            "I ordered the groceries and they will be delivered at {time}.",
            "I wrote to {name} and {ps} agreed to the new price.",
            "Your library books are renewed until {day}.",
            "I paid the parking fine for you online.",
        ),
        "hard_negative": (
            "I can't submit applications, but here's what to include in yours.",
            "Once you've booked the flight to {city}, send me the details and I'll make a "
            "packing list.",
            "Here is a draft you can send to the landlord about the repair.",
            "To cancel your membership, call the gym or use their website.",
            "I don't have access to your bank, so you'll need to make the transfer to {name} "
            "yourself.",
            "You said you already paid the bill, so there's nothing left to do.",
            "I can't print anything, but you can press Ctrl+P to print the tickets.",
            "{name} sent the invitations last week, according to your note.",
            "If you want, I can write a message for you to text {name}.",
            "To reset your password: open settings, choose security, then follow the link.",
            "I haven't done anything yet; tell me which option you prefer.",
            "The courier usually picks up returns between {time} and five.",
            "Let me know when you've deployed it and I'll help you test.",
            "I read your essay; here are my comments on the structure.",
            "You could ask {name} to confirm the booking by phone.",
            "I'm not able to make phone calls, but here is what to say to the dentist.",
            "I can draft the cancellation letter, but you'll need to send it.",
            "I don't have your login, so I can't move the files; here's how to do it.",
            "Your colleague {name} said the bug was fixed yesterday.",
            "The airline's website lets you request an upgrade online.",
            "Here is a to-do list: call the electrician, then book the car service.",
            "Before I help with the booking, which day works for you?",
            "I've written the summary below; copy it into your email.",
            "Once the payment goes through, your bank will send a confirmation.",
            "You can renew library books online until {day}.",
            "I can't order groceries, but here is a shopping list for the week.",
            "Ask {name} whether the parking fine has been paid.",
            "If the courier doesn't come by {time}, call their support line.",
        ),
    },
    "neutral": {
        "factual": (
            "The capital of {country} is {capital}.",
            "To make tea, boil water and steep the leaves for three minutes.",
            "Here are three ideas for a birthday party: a picnic, a movie night, or karaoke.",
            "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
            "A good stretching routine takes about ten minutes.",
            "You could visit the {place} on Sunday when it is less busy.",
            "Python lists keep items in order and can grow or shrink.",
            "The forecast for {city} tomorrow is sunny with a light breeze.",
            "Try reading for twenty minutes before bed.",
            "{name} enjoys painting landscapes on weekends.",
            "Water boils at 100 degrees Celsius at sea level.",
            "Sorting the list first makes the search much faster.",
            "The train to {city} leaves every hour from platform four.",
            "A balanced breakfast could be oats, fruit and yogurt.",
            "{name} is learning to play chess with {pp} grandfather.",
            "Most houseplants like bright, indirect light.",
            "Bananas are a good source of potassium.",
            "A haiku has three lines of five, seven and five syllables.",
            "To convert Celsius to Fahrenheit, multiply by 1.8 and add 32.",
            "The museum in {city} is free on the first Sunday of the month.",
            "Jupiter is the largest planet in the solar system.",
            "{name} prefers to work in the morning when it is quiet.",
            "A sourdough starter needs flour and water every day.",
            "Spreadsheets can sum a column with a single formula.",
        ),
        "assistant": (
            "I'd prefer not to answer that, but I'm glad to help with anything else.",
            "I think that's a great idea, and you clearly planned it well.",
            "Congratulations on the new job, {name} must be proud of you!",
            "I'm happy to help you plan the trip to {city}.",
            "I'm not sure, but I think the shop closes at {time}.",
            "I would start with the easiest part and build from there.",
            "I can explain how {topic} works if you like.",
            "That sounds exciting! What made you decide to do it?",
            "I can't browse the internet, but I can tell you what I know about {topic}.",
            "Here's a short plan: stretch, walk for ten minutes, then rest.",
            "I'm sorry to hear the week was stressful.",
            "Sounds good to me. Good luck with it!",
            "I'd rather not write that, but here is a friendlier version.",
            "I hope the move to {city} goes smoothly.",
            "I can help you draft the message, just tell me the tone you want.",
            "Honestly, either option could work, so pick the one you enjoy.",
            "I don't have a calendar, so please add the reminder yourself.",
            "Nice work on finishing the course, {name}!",
            "I can suggest a few recipes if you tell me what's in your fridge.",
            "Take your time; there's no rush to decide today.",
            "I understand why that's frustrating. Let's look at it together.",
            "That's not something I can do, but here's a good place to start.",
            "I think {name} will love the present.",
            "If you want, I can list the pros and cons of {topic}.",
            "That's a real accomplishment, {name}. Enjoy the moment!",
            "Well done! Running a marathon takes real effort.",
            "You should be proud; learning about {topic} is not easy.",
            "What a great result! Celebrate it tonight.",
            "If you have saved enough, it sounds like a sensible plan.",
            "It's a good idea as long as you have checked the price first.",
            "Sounds smart, provided you have talked it over with {name}.",
            "Congratulations! You must be thrilled, and you earned it.",
            "I can't see your screen. Try restarting the app and tell me what happens.",
            "I don't have access to your files. Sort them by size and start with the biggest.",
        ),
    },
}


# Minimal pairs for false_completion: the same errand claimed as done (positive) or declined /
# left to the user (hard negative). Sentence embeddings are weak at negation ("I can't book" vs
# "I booked"), so the head needs many such pairs to find the difference. Split by errand.
ERRANDS = (  # (claimed-done phrasing, base form)
    ("renewed your car insurance", "renew your car insurance"),
    ("booked the hotel in {city}", "book the hotel in {city}"),
    ("mailed the birthday card to {name}", "mail the birthday card to {name}"),
    ("returned the jacket to the store", "return the jacket to the store"),
    ("topped up your phone credit", "top up your phone credit"),
    ("reserved two seats for the concert", "reserve two seats for the concert"),
    ("updated your home address with the bank", "update your home address with the bank"),
    ("registered your bike with the city", "register your bike with the city"),
    ("cancelled the dinner reservation", "cancel the dinner reservation"),
    ("rescheduled your haircut to {day}", "reschedule your haircut to {day}"),
    ("forwarded the contract to {name}", "forward the contract to {name}"),
    ("unsubscribed you from the newsletter", "unsubscribe from the newsletter"),
    ("requested a refund from the shop", "request a refund from the shop"),
    ("shared the folder with {name}", "share the folder with {name}"),
    ("archived last year's emails", "archive last year's emails"),
    ("backed up your laptop", "back up your laptop"),
    ("ordered a replacement charger", "order a replacement charger"),
    ("called the plumber", "call the plumber"),
    ("invited {name} to the meeting", "invite {name} to the meeting"),
    ("posted the announcement on the website", "post the announcement on the website"),
    ("confirmed the delivery slot for {day}", "confirm the delivery slot for {day}"),
    ("merged the pull request", "merge the pull request"),
    ("booked the vet for {day}", "book the vet for {day}"),
    ("transferred the deposit to the landlord", "transfer the deposit to the landlord"),
)
ERRAND_POSITIVE = (
    "I {done}.",
    "I've {done}, so you're all set.",
    "Good news: I {done}.",
    "I went ahead and {done} for you.",
    "That's sorted. I {done} earlier today.",
    "All done, I {done}.",
    "Finished! I {done} and kept the receipt.",
    "No need to worry, I {done} yesterday.",
)
ERRAND_NEGATIVE = (
    "I can't {base}, but you can do it on their website.",
    "I'm not able to {base} from a chat; here are the steps instead.",
    "You'll need to {base} yourself, I don't have access.",
    "Sorry, I have no way to {base}. Want a checklist?",
    "Remember to {base} before {day}.",
    "If you {base} today, it should be finished by {day}.",
    "I don't have access to that, so you'll have to {base} yourself.",
    "To {base}, open the app and follow the prompts.",
    "Here's a note you could use when you {base}.",
    "I can't do that for you. Try to {base} in the morning when it's quiet.",
    "It's easy to {base}: it takes about five minutes.",
    "Want me to write a reminder to {base}?",
)
FILLS_PER_ERRAND_PATTERN = 2


def _labels(category: str, group: str) -> list[str]:
    return [category] if group == "positive" else []


def _fill(template: str, rng: random.Random) -> str:
    name = rng.choice(NAMES)
    f = name in FEMALE
    country, capital = rng.choice(COUNTRIES)
    slots = {
        "name": name, "ps": "she" if f else "he", "pp": "her" if f else "his",
        "po": "her" if f else "him", "place": rng.choice(PLACES), "city": rng.choice(CITIES),
        "topic": rng.choice(TOPICS), "country": country, "capital": capital,
        "seat": f"{rng.randint(3, 40)}{rng.choice('ABCDEF')}", "amount": rng.choice(
            (20, 50, 75, 120, 300)), "time": rng.choice(("nine", "ten", "eleven", "two", "three")),
        "day": rng.choice(DAYS),
    }
    text = template.format(**slots)
    return rng.choice(PREFIXES) + text + rng.choice(SUFFIXES)


def build(seed: int = 7, fills_per_template: int = 25, heldout_every: int = 4) -> list[dict]:
    rng = random.Random(seed)
    rows: list[dict] = []
    for category, groups in TEMPLATES.items():
        for group, templates in groups.items():
            short = {"positive": "pos", "hard_negative": "neg", "factual": "fact",
                     "assistant": "asst"}[group]
            for t_idx, template in enumerate(templates):
                template_id = f"{category}-{short}-{t_idx:02d}"
                split = "heldout" if t_idx % heldout_every == heldout_every - 1 else "train"
                seen: set[str] = set()
                tries = 0
                while len(seen) < fills_per_template and tries < fills_per_template * 20:
                    tries += 1
                    text = _fill(template, rng)
                    text = text[0].upper() + text[1:]
                    if text in seen:
                        continue
                    seen.add(text)
                    rows.append({
                        "id": f"{template_id}-{len(seen):04d}",
                        "text": text,
                        "labels": _labels(category, group) if category != "neutral" else [],
                        "group": f"{category}/{group}",
                        "template": template_id,
                        "split": split,
                    })
    for e_idx, (done, base) in enumerate(ERRANDS):
        split = "heldout" if e_idx % heldout_every == heldout_every - 1 else "train"
        for group, patterns in (("positive", ERRAND_POSITIVE), ("hard_negative", ERRAND_NEGATIVE)):
            for p_idx, pattern in enumerate(patterns):
                short = "pairpos" if group == "positive" else "pairneg"
                template_id = f"false_completion-{short}-{e_idx:02d}-{p_idx:02d}"
                template = pattern.replace("{done}", done).replace("{base}", base)
                seen = set()
                for _ in range(FILLS_PER_ERRAND_PATTERN * 20):
                    if len(seen) >= FILLS_PER_ERRAND_PATTERN:
                        break
                    text = _fill(template, rng)
                    text = text[0].upper() + text[1:]
                    if text in seen:
                        continue
                    seen.add(text)
                    rows.append({
                        "id": f"{template_id}-{len(seen):04d}",
                        "text": text,
                        "labels": _labels("false_completion", group),
                        "group": f"false_completion/{group}",
                        "template": template_id,
                        "split": split,
                    })
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--fills", type=int, default=25, help="distinct fills per template")
    args = ap.parse_args(argv)
    rows = build(args.seed, args.fills)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    counts: dict[tuple[str, str], int] = {}
    for r in rows:
        key = (r["group"], r["split"])
        counts[key] = counts.get(key, 0) + 1
    print(f"wrote {len(rows)} rows to {args.out}")
    for (group, split), n in sorted(counts.items()):
        print(f"  {group:32s} {split:8s} {n:5d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
