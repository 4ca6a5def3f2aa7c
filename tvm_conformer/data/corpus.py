"""Seeded voice-assistant sentences (timers, weather, calls, music, smart home, calendar, questions).

All text is normalized to the recognizer's alphabet: lowercase a-z, space and apostrophe, with
numbers and clock times spelled out.
"""

from __future__ import annotations

import random
import re
import string
import unicodedata
from collections.abc import Callable

ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth",
    "eight": "eighth", "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip


def number_to_words(n: int) -> str:
    """Spell out 0 <= n <= 9999 ("one thousand two hundred five")."""
    if not 0 <= n <= 9999:
        raise ValueError(f"number_to_words handles 0..9999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_to_words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    return f"{_ONES[thousands]} thousand" + (f" {number_to_words(rest)}" if rest else "")


def ordinal_to_words(n: int) -> str:
    """Spell out an ordinal 1 <= n <= 9999 ("twenty first")."""
    if n < 1:
        raise ValueError(f"ordinals start at 1, got {n}")
    *head, last = number_to_words(n).split()
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


def clock_to_words(hour: int, minute: int, meridiem: str | None = None) -> str:
    """Spell out a clock time: (7, 30, "am") -> "seven thirty a m"; (19, 5) -> "seven oh five p m".

    meridiem is "am", "pm" or None; a 24-hour hour (0 or 13..23) implies it.
    """
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise ValueError(f"not a clock time: {hour}:{minute:02d}")
    if meridiem is None and hour > 12:
        hour, meridiem = hour - 12, "pm"
    elif meridiem is None and hour == 0:
        hour, meridiem = 12, "am"
    words = number_to_words(hour)
    if minute == 0:
        words += "" if meridiem else " o'clock"
    elif minute < 10:
        words += f" oh {number_to_words(minute)}"
    else:
        words += f" {number_to_words(minute)}"
    return words + (f" {meridiem[0]} m" if meridiem else "")


def _number_token(match: re.Match[str]) -> str:
    digits = match.group(0)
    if len(digits) <= 4:
        return f" {number_to_words(int(digits))} "
    return " " + " ".join(_ONES[int(d)] for d in digits) + " "


def normalize_text(text: str) -> str:
    """Lowercase a-z/space/apostrophe text with numbers, times, ordinals and symbols spelled out."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(
        r"\b(\d{1,2}):(\d{2})\s*(?:([ap])\.?\s?m\b\.?)?",
        lambda m: f" {clock_to_words(int(m[1]), int(m[2]), m[3] and m[3] + 'm')} ",
        text,
    )
    text = re.sub(
        r"\b(\d{1,2})\s*([ap])\.?\s?m\b\.?",
        lambda m: f" {clock_to_words(int(m[1]), 0, m[2] + 'm')} ",
        text,
    )
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", lambda m: f" {ordinal_to_words(int(m[1]))} ", text)
    text = re.sub(r"(\d+)\.(\d+)", lambda m: f"{m[1]} point {' '.join(m[2])}", text)
    for symbol, words in (("%", " percent "), ("\u00b0", " degrees "), ("&", " and ")):
        text = text.replace(symbol, words)
    text = re.sub(r"\d+", _number_token, text)
    text = re.sub(r"[^a-z' ]", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # quotes, not apostrophes
    return " ".join(text.split())


# ---- slot values --------------------------------------------------------------------------

NAMES = (
    "adam alex alice amelia amy andrew anna anthony ava ben bella brian carlos caroline charlie chloe chris "
    "daniel david diana dylan edward ella emily emma ethan eva fiona frank george grace hannah harry "
    "henry isaac isabella jack jacob james jane jason jennifer jessica joe john julia kate kevin kim "
    "laura leo liam lily lucas lucy maria mark martin mary matthew maya michael mia nathan "
    "nina noah olivia oscar paul peter rachel robert rose ryan sam sarah sophie steven thomas "
    "tom victoria william zoe"
).split()
CITIES = (
    "london|paris|berlin|madrid|rome|amsterdam|dublin|lisbon|vienna|prague|warsaw|stockholm|"
    "oslo|helsinki|copenhagen|athens|zurich|brussels|munich|barcelona|edinburgh|manchester|"
    "new york|boston|chicago|seattle|denver|miami|dallas|houston|atlanta|phoenix|san francisco|"
    "los angeles|las vegas|portland|detroit|toronto|montreal|vancouver|mexico city|"
    "buenos aires|rio de janeiro|lima|tokyo|seoul|beijing|shanghai|hong kong|singapore|bangkok|"
    "mumbai|delhi|dubai|cairo|nairobi|cape town|sydney|melbourne|auckland"
).split("|")
ARTISTS = (
    "the beatles|taylor swift|adele|coldplay|queen|madonna|elton john|bob marley|miles davis|"
    "frank sinatra|ed sheeran|bruno mars|lady gaga|katy perry|rihanna|drake|eminem|nirvana|"
    "metallica|the rolling stones|pink floyd|led zeppelin|abba|bob dylan|david bowie|prince|"
    "stevie wonder|whitney houston|ella fitzgerald|louis armstrong|johnny cash|dolly parton|"
    "billie eilish|shakira|michael jackson|elvis presley|norah jones|daft punk|radiohead|"
    "fleetwood mac|aretha franklin|ray charles|green day|oasis"
).split("|")
GENRES = (
    "jazz|rock|classical music|hip hop|country music|blues|reggae|pop music|electronic music|"
    "folk music|soul music|funk|heavy metal|ambient music|piano music|disco|indie rock|punk rock|"
    "eighties hits|relaxing music|latin music|opera"
).split("|")
PLAYLISTS = (
    "my workout playlist|morning coffee|road trip|chill vibes|focus music|dinner party|"
    "sleep sounds|party mix|running mix|study beats|summer hits|my favorites|top forty|"
    "rainy day|sunday morning"
).split("|")
ROOMS = (
    "kitchen|living room|bedroom|bathroom|office|garage|hallway|dining room|basement|nursery|"
    "kids room|guest room|porch|attic|laundry room|master bedroom|study"
).split("|")
DEVICES = (
    "lights|lamp|fan|heater|air conditioner|tv|coffee maker|ceiling fan|dishwasher|"
    "robot vacuum|speaker|radio|night light|humidifier"
).split("|")
COLORS = "red|blue|green|warm white|cool white|yellow|purple|orange|pink".split("|")
DAYS = (
    "today|tomorrow|tonight|this morning|this afternoon|this evening|this weekend|"
    "on monday|on tuesday|on wednesday|on thursday|on friday|on saturday|on sunday|"
    "next week|next monday|next friday|the day after tomorrow"
).split("|")
MONTHS = (
    "january february march april may june july august september october november december"
).split()
CONDITIONS = "rain|snow|be sunny|be windy|be cloudy|be cold|be hot|storm|be foggy".split("|")
EVENTS = (
    "dentist appointment|team meeting|doctor's appointment|yoga class|haircut|soccer practice|"
    "piano lesson|job interview|book club|dinner reservation|gym session|conference call|"
    "birthday party|flight|parent teacher meeting|car service"
).split("|")
MESSAGES = (
    "i'm running late|i'll be there in ten minutes|call me back|happy birthday|see you tonight|"
    "don't forget the milk|can you pick up the kids|dinner is ready|i'm on my way|"
    "the meeting is cancelled|i just landed|good night|thank you so much|where are you|"
    "let's meet at the cafe|i left my keys at home|are you free tomorrow"
).split("|")
REMINDERS = (
    "take out the trash|water the plants|call mom|pay the rent|buy milk|feed the cat|"
    "walk the dog|take my medicine|pick up the laundry|book a table|charge my phone|"
    "send the report|lock the back door|renew my passport"
).split("|")


def _pick(values: list[str]) -> Callable[[random.Random], str]:
    return lambda rng: rng.choice(values)


def _duration(rng: random.Random) -> str:
    form = rng.randrange(6)
    if form == 0:
        return f"{number_to_words(rng.randint(2, 59))} minutes"
    if form == 1:
        return f"{number_to_words(rng.choice([5, 10, 15, 20, 30, 45, 90]))} seconds"
    if form == 2:
        return rng.choice(["an hour", "half an hour", "a minute", "one minute", "ninety minutes"])
    if form == 3:
        return f"{number_to_words(rng.randint(2, 12))} hours"
    if form == 4:
        return f"one hour and {number_to_words(rng.randint(2, 59))} minutes"
    return f"{number_to_words(rng.randint(1, 20))} minutes and {number_to_words(rng.randint(2, 59))} seconds"


def _time(rng: random.Random) -> str:
    form = rng.randrange(6)
    hour = rng.randint(1, 12)
    if form == 0:
        return clock_to_words(
            hour, rng.choice([0, 5, 10, 15, 20, 30, 40, 45, 50]), rng.choice(["am", "pm"])
        )
    if form == 1:
        return clock_to_words(hour, rng.choice([0, 15, 30, 45]))
    if form == 2:
        return clock_to_words(hour, rng.randrange(60), rng.choice(["am", "pm", None]))
    if form == 3:
        return (
            rng.choice(["quarter past", "half past", "quarter to", "ten to", "five past"])
            + f" {_ONES[hour]}"
        )
    if form == 4:
        return rng.choice(["noon", "midnight", "six in the morning", "eight in the evening"])
    return clock_to_words(hour, 0, rng.choice(["am", "pm"]))


def _date(rng: random.Random) -> str:
    month, day = rng.choice(MONTHS), ordinal_to_words(rng.randint(1, 28))
    return f"{month} {day}" if rng.random() < 0.5 else f"the {day} of {month}"


def _temperature(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"{number_to_words(rng.randint(16, 28))} degrees"
    return f"{number_to_words(rng.randint(60, 80))} degrees"


SLOTS: dict[str, Callable[[random.Random], str]] = {
    "name": _pick(NAMES),
    "city": _pick(CITIES),
    "artist": _pick(ARTISTS),
    "genre": _pick(GENRES),
    "playlist": _pick(PLAYLISTS),
    "room": _pick(ROOMS),
    "device": _pick(DEVICES),
    "color": _pick(COLORS),
    "day": _pick(DAYS),
    "condition": _pick(CONDITIONS),
    "event": _pick(EVENTS),
    "message": _pick(MESSAGES),
    "reminder": _pick(REMINDERS),
    "duration": _duration,
    "time": _time,
    "date": _date,
    "temperature": _temperature,
    "percent": lambda rng: f"{number_to_words(rng.choice(range(10, 101, 10)))} percent",
    "volume": lambda rng: number_to_words(rng.randint(1, 10)),
}

TEMPLATES: dict[str, list[str]] = {
    "timers": [
        "set a timer for {duration}",
        "start a {duration} timer",
        "timer for {duration} please",
        "how much time is left on my timer",
        "cancel the {duration} timer",
        "set an alarm for {time}",
        "wake me up at {time}",
        "set an alarm for {time} {day}",
        "change my alarm to {time}",
        "turn off the alarm for {time}",
        "snooze the alarm for {duration}",
        "remind me to {reminder} in {duration}",
        "remind me to {reminder} at {time}",
    ],
    "weather": [
        "what's the weather in {city}",
        "what's the weather like {day}",
        "how is the weather in {city} {day}",
        "will it {condition} in {city} {day}",
        "is it going to {condition} {day}",
        "what's the temperature in {city} right now",
        "do i need an umbrella {day}",
        "what's the forecast for {city}",
        "how cold is it in {city}",
        "when will the sun set in {city} {day}",
    ],
    "calls": [
        "call {name}",
        "call {name} on speaker",
        "call {name}'s mobile",
        "phone {name} and {name2}",
        "send a message to {name} saying {message}",
        "text {name} {message}",
        "tell {name} that {message}",
        "read my messages from {name}",
        "did {name} call me {day}",
        "send {name} a voice message",
        "reply to {name} {message}",
        "video call {name}",
    ],
    "music": [
        "play some {genre}",
        "play {artist}",
        "play songs by {artist}",
        "play the latest album by {artist}",
        "shuffle {playlist}",
        "play my {playlist} playlist",
        "add this song to {playlist}",
        "play {genre} in the {room}",
        "turn the volume up to {volume}",
        "set the volume to {volume}",
        "skip this song",
        "who sings this song",
        "play something like {artist}",
        "pause the music",
    ],
    "home": [
        "turn on the {room} {device}",
        "turn off the {device} in the {room}",
        "switch off all the lights",
        "dim the {room} lights to {percent}",
        "set the {room} lights to {color}",
        "set the thermostat to {temperature}",
        "make the {room} warmer",
        "set the temperature in the {room} to {temperature}",
        "is the {room} light on",
        "lock the {room} door",
        "turn the heating down in the {room}",
        "start the {device} at {time}",
        "brighten the lights in the {room}",
        "what's the temperature in the {room}",
    ],
    "calendar": [
        "what's on my calendar {day}",
        "add a {event} {day} at {time}",
        "schedule a {event} on {date}",
        "when is my next {event}",
        "move my {event} to {time}",
        "cancel my {event} {day}",
        "do i have anything on {date}",
        "set up a meeting with {name} {day} at {time}",
        "remind me about my {event} on {date}",
        "what time is my {event} {day}",
        "am i free {day} at {time}",
    ],
    "questions": [
        "what time is it",
        "what time is it in {city}",
        "how is the weather today",
        "what day is it today",
        "what's the date {day}",
        "how far is {city} from {city2}",
        "what's the time difference with {city}",
        "how long is the drive to {city}",
        "tell me a joke",
        "what can you do",
        "how many days until {date}",
        "what's the news today",
    ],
}
SLOTS["name2"] = SLOTS["name"]
SLOTS["city2"] = SLOTS["city"]
_FORMATTER = string.Formatter()


def _draw(rng: random.Random) -> tuple[str, bool]:
    template = rng.choice(TEMPLATES[rng.choice(list(TEMPLATES))])
    fields = sorted({name for _, name, _, _ in _FORMATTER.parse(template) if name})
    return normalize_text(template.format(**{f: SLOTS[f](rng) for f in fields})), bool(fields)


def random_sentence(rng: random.Random) -> str:
    """One normalized voice-assistant sentence: a random domain, template and slot values."""
    return _draw(rng)[0]


def make_splits(seed: int, n_train: int, n_valid: int, n_test: int) -> dict[str, list[str]]:
    """Distinct sentences for "train", "valid" and "test"; no sentence is in two splits.

    Sentences are drawn in order test, valid, train, so the test set does not depend on n_train.
    Fixed sentences (templates without slots, e.g. "what time is it") go to train only.
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[str]] = {}
    for split, n in (("test", n_test), ("valid", n_valid), ("train", n_train)):
        sentences: list[str] = []
        attempts = 0
        while len(sentences) < n:
            attempts += 1
            if attempts > 50 * n + 1000:
                raise ValueError(f"could not draw {n} distinct {split} sentences; ask for fewer")
            sentence, has_slots = _draw(rng)
            if sentence not in seen and (has_slots or split == "train"):
                seen.add(sentence)
                sentences.append(sentence)
        splits[split] = sentences
    return {split: splits[split] for split in ("train", "valid", "test")}
