"""Open-vocabulary voice-assistant text: a large training grammar and a disjoint test grammar.

`TRAIN_GRAMMAR` (the training text) and `UNSEEN_GRAMMAR` (the test split "unseen phrasing")
share no template: the unseen grammar asks for the same kinds of things in other words, with
slot values partly drawn from lists the training grammar never uses (`UNSEEN_*`), so its test
sentences measure whether the model learned English rather than templates. Everything is
normalized with `corpus.normalize_text`.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

from tvm_conformer.data.corpus import (
    ARTISTS,
    CITIES,
    COLORS,
    DAYS,
    DEVICES,
    EVENTS,
    GENRES,
    MESSAGES,
    MONTHS,
    NAMES,
    PLAYLISTS,
    REMINDERS,
    ROOMS,
    clock_to_words,
    normalize_text,
    number_to_words,
    ordinal_to_words,
)

Slot = Callable[[random.Random], str]


def _split(text: str) -> list[str]:
    return [v.strip() for v in text.split("|") if v.strip()]


# ---- training slot values (extending corpus.py's lists) ---------------------------------------
T_NAMES = NAMES + _split(
    "aaron abigail adrian aisha alan albert alexander alfie amir andrea angela ann arthur "
    "barbara beth bill bob brandon carl carol catherine charlotte chen christina claire "
    "clara colin connor craig dan dave deborah dennis derek donna doug eleanor elena eli "
    "elizabeth eric erin evan felix freya gabriel gary gemma gina greg hailey harold "
    "heather helen holly hugo ian irene ivan jake jasmine jeff jenny jill joan jordan "
    "joseph joshua joy judy justin karen katie keith ken kyle larry leah lena leon linda "
    "lisa louise luke maggie marco margaret mario max megan melissa mike molly monica "
    "nancy naomi neil nick nicole oliver omar owen pam patrick paula philip priya quinn "
    "raj ray rebecca richard rita roger ruby russell ruth sandra scott sean simon sofia "
    "stella stephanie susan tara ted teresa tim tina tony tyler valerie vincent walter "
    "wendy yasmin yusuf zach".replace(" ", "|")
)
RELATIVES = _split(
    "mom|dad|my mother|my father|my sister|my wife|my husband|my son|my daughter|grandma|"
    "grandpa|my aunt|my uncle|my cousin|my boss|my neighbor|my friend|my partner|the babysitter|"
    "my doctor|my teacher|my landlord|the office"
)
PLACES = _split(
    "the office|the gym|the supermarket|the train station|the bus stop|the library|the bank|"
    "the pharmacy|the post office|the hospital|the park|the beach|the museum|the cinema|"
    "the mall|the bakery|the school|the university|the stadium|the hotel|the restaurant|"
    "the gas station|the hardware store|the zoo|the city center|work|home|downtown|"
    "the nearest coffee shop|a good pizza place|the farmers market|the swimming pool"
)
T_CITIES = CITIES + _split(
    "glasgow|liverpool|birmingham|leeds|bristol|oxford|cambridge|cardiff|belfast|geneva|"
    "milan|venice|florence|naples|seville|valencia|porto|hamburg|frankfurt|cologne|budapest|"
    "krakow|istanbul|moscow|kyiv|tel aviv|johannesburg|lagos|casablanca|marrakesh|karachi|"
    "bangalore|kolkata|jakarta|manila|hanoi|kuala lumpur|osaka|kyoto|taipei|perth|brisbane|"
    "wellington|honolulu|anchorage|san diego|austin|nashville|new orleans|philadelphia|"
    "washington|baltimore|pittsburgh|cleveland|minneapolis|salt lake city|ottawa|calgary|"
    "quebec|havana|bogota|santiago|sao paulo|montevideo"
)
FOODS = _split(
    "pizza|sushi|pasta|tacos|a burger|fried chicken|noodles|curry|salad|soup|a sandwich|"
    "pancakes|ice cream|chocolate cake|apple pie|steak|fish and chips|dumplings|ramen|"
    "lasagna|a smoothie|coffee|tea|orange juice|bread|eggs|rice|beans|cheese|yogurt|bananas|"
    "apples|tomatoes|potatoes|onions|garlic|carrots|butter|flour|sugar|olive oil|cereal|"
    "chicken soup|banana bread|guacamole|hummus|muffins|cookies|lemonade"
)
THINGS = _split(
    "my keys|my phone|my wallet|my glasses|the remote|my headphones|my laptop|the charger|"
    "my umbrella|my passport|my jacket|the tickets|my notebook|the car keys|my watch|"
    "my bag|the receipt|my earbuds"
)
SHOWS = _split(
    "the news|the weather channel|a documentary about space|a cooking show|the football game|"
    "the basketball game|a comedy|a horror movie|a romantic comedy|a cartoon|the late show|"
    "a nature documentary|the olympics|a science fiction movie|an action movie|the cricket"
)
TOPICS = _split(
    "the moon|the ocean|dinosaurs|black holes|the roman empire|volcanoes|the human brain|"
    "electricity|photosynthesis|the pyramids|climate change|the stock market|vitamins|sharks|"
    "the solar system|earthquakes|honey bees|the internet|world war two|the french revolution|"
    "quantum physics|the great wall of china|penguins|tornadoes|the heart|gravity|rainbows"
)
APPS = _split(
    "the camera|maps|my email|the calculator|the calendar|my notes|spotify|youtube|"
    "netflix|the weather app|settings|my photos|whatsapp|the clock|the browser|podcasts"
)
LANGUAGES = _split(
    "spanish|french|german|italian|japanese|chinese|korean|portuguese|russian|arabic|hindi|"
    "dutch|greek|turkish|polish|swedish"
)
WORDS = _split(
    "hello|thank you|good morning|goodbye|where is the station|how much is this|"
    "i love you|excuse me|the bill please|nice to meet you|water|friend|beautiful|"
    "breakfast|library|happy birthday|good luck|see you later"
)
APPOINTMENTS = EVENTS + _split(
    "lunch with a client|coffee with a friend|school run|guitar lesson|swimming lesson|"
    "eye exam|vet appointment|board meeting|date night|movie night|study group|"
    "volunteer shift|tennis match|family dinner|lunch break|physical therapy"
)
CHORES = REMINDERS + _split(
    "buy a birthday present|clean the kitchen|do the laundry|empty the dishwasher|"
    "cancel the subscription|email the landlord|fix the bike|mow the lawn|pack my bag|"
    "print the tickets|return the library books|check the oven|stretch|drink some water|"
    "call the plumber|order more coffee|back up my laptop|sign the form|go to bed|"
    "move the car|pick up the dry cleaning|buy stamps|book a doctor's appointment"
)
FREE_MESSAGES = MESSAGES + _split(
    "i'll call you after the meeting|the train is delayed by twenty minutes|can we talk later|"
    "the kids are asleep|please bring some bread on your way home|i found your keys|"
    "the package arrived this morning|do you want to get lunch|i'm stuck in traffic|"
    "let's watch a movie tonight|the doctor said everything is fine|i miss you|"
    "congratulations on the new job|don't wait up for me|the party starts at seven|"
    "could you feed the cat|i forgot my wallet|we won the game|call me when you land|"
    "the water is off until noon|save me a seat|the store is closed|i need a ride home|"
    "how was your day|good luck with the exam|let me know when you're free|"
    "i'll be home for dinner|sorry i missed your call|the car is making a strange noise"
)
QUANTITIES = _split(
    "a cup of|two cups of|a tablespoon of|a teaspoon of|half a cup of|a pound of|"
    "a kilo of|two hundred grams of|a liter of|three ounces of"
)
UNITS = _split(
    "miles|kilometers|meters|feet|inches|centimeters|pounds|kilograms|ounces|grams|liters|"
    "gallons|cups|degrees fahrenheit|degrees celsius"
)
ADJECTIVES = _split(
    "quiet|cheap|good|nice|popular|romantic|quick|healthy|family friendly|open|nearby|"
    "vegetarian|italian|chinese|mexican|indian|thai|japanese|french"
)
VENUES = _split(
    "restaurants|cafes|bars|hotels|parks|gyms|bookstores|pharmacies|gas stations|"
    "supermarkets|museums|cinemas|pizza places|bakeries"
)
DAYS_MORE = DAYS + _split(
    "in the morning|tomorrow morning|tomorrow night|this saturday|next tuesday|"
    "next thursday|on the weekend|later today|in an hour|at lunchtime|after work|tonight"
)

# ---- values only the unseen grammar uses ------------------------------------------------------
UNSEEN_RELATIVES = _split(
    "my brother|my grandmother|my grandfather|my niece|my nephew|my coach|my roommate|"
    "my colleague|my dentist|the plumber|my best friend|my stepmother"
)
UNSEEN_NAMES = _split(
    "amanda|benjamin|caleb|daisy|emmanuel|fatima|gordon|hazel|ingrid|jonah|kenji|lorenzo|"
    "matilda|norman|ophelia|pierre|rosalind|sebastian|theodore|ursula|wesley|ximena|yvonne"
)
UNSEEN_PLACES = _split(
    "the airport|the dentist|the vet|the car wash|the laundromat|the concert hall|the harbor|"
    "the ice rink|the bowling alley|the botanical garden|the courthouse|the fire station"
)
UNSEEN_CITIES = _split(
    "reykjavik|tallinn|riga|vilnius|bratislava|ljubljana|sarajevo|tbilisi|yerevan|baku|"
    "tashkent|kathmandu|colombo|ulaanbaatar|addis ababa|accra|dakar|tunis|muscat|doha|"
    "kingston|panama city|quito|la paz|asuncion|fiji|tahiti|hobart|darwin|adelaide"
)
UNSEEN_FOODS = _split(
    "lentil soup|a grilled cheese sandwich|blueberry muffins|a caesar salad|spaghetti|"
    "chicken curry|a veggie burger|pad thai|mashed potatoes|a fruit salad|oatmeal|waffles"
)
UNSEEN_DEVICES = _split(
    "porch light|garage door|sprinklers|blinds|curtains|kettle|oven|washing machine|"
    "electric blanket|space heater|doorbell camera|aquarium light"
)


def _pick(values: list[str]) -> Slot:
    return lambda rng: rng.choice(values)


def _number(lo: int, hi: int) -> Slot:
    return lambda rng: number_to_words(rng.randint(lo, hi))


def _year(rng: random.Random) -> str:
    y = rng.randint(1900, 2039)
    if 2000 <= y <= 2009:
        return number_to_words(y)
    hi, lo = divmod(y, 100)
    return f"{number_to_words(hi)} " + (
        "hundred" if lo == 0 else f"oh {number_to_words(lo)}" if lo < 10 else number_to_words(lo)
    )


def _time(rng: random.Random) -> str:
    form = rng.randrange(5)
    hour = rng.randint(1, 12)
    if form == 0:
        return clock_to_words(hour, rng.choice([0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]),
                              rng.choice(["am", "pm"]))
    if form == 1:
        return clock_to_words(hour, rng.randrange(60), rng.choice(["am", "pm", None]))
    if form == 2:
        return f"{rng.choice(['quarter past', 'half past', 'quarter to', 'ten past', 'twenty to'])} {number_to_words(hour)}"
    if form == 3:
        return f"{number_to_words(hour)} {rng.choice(['in the morning', 'in the evening', 'at night', 'in the afternoon'])}"
    return rng.choice(["noon", "midnight", "sunrise", "sunset"]) if rng.random() < 0.3 else clock_to_words(hour, 0, rng.choice(["am", "pm"]))


def _duration(rng: random.Random) -> str:
    form = rng.randrange(5)
    if form == 0:
        return f"{number_to_words(rng.randint(2, 90))} minutes"
    if form == 1:
        return f"{number_to_words(rng.randint(10, 59))} seconds"
    if form == 2:
        return f"{number_to_words(rng.randint(2, 23))} hours"
    if form == 3:
        return rng.choice(["an hour", "half an hour", "a minute", "a quarter of an hour",
                           "an hour and a half", "a couple of minutes", "a few seconds"])
    return f"{number_to_words(rng.randint(1, 5))} hours and {number_to_words(rng.randint(2, 59))} minutes"


def _date(rng: random.Random) -> str:
    month, day = rng.choice(MONTHS), ordinal_to_words(rng.randint(1, 31))
    form = rng.randrange(4)
    if form == 0:
        return f"{month} {day}"
    if form == 1:
        return f"the {day} of {month}"
    if form == 2:
        return f"{month} {day} {_year(rng)}"
    return f"{rng.choice(['next', 'last', 'this'])} {rng.choice(['week', 'month', 'year', 'weekend', 'monday', 'friday', 'sunday'])}"


def _money(rng: random.Random) -> str:
    n = rng.choice([rng.randint(1, 99), rng.randint(100, 999), rng.randint(1000, 9999)])
    cur = rng.choice(["dollars", "euros", "pounds", "yen", "bucks"])
    return f"{number_to_words(n)} {cur}" + (
        f" and {number_to_words(rng.randint(1, 99))} cents" if rng.random() < 0.2 else "")


def _phone(rng: random.Random) -> str:
    return " ".join(number_to_words(rng.randint(0, 9)) for _ in range(rng.choice([7, 10])))


def _amount(rng: random.Random) -> str:
    return f"{number_to_words(rng.randint(1, 500))} {rng.choice(UNITS)}"


def _person(rng: random.Random) -> str:
    return rng.choice(T_NAMES) if rng.random() < 0.7 else rng.choice(RELATIVES)


def _unseen_person(rng: random.Random) -> str:
    r = rng.random()
    return rng.choice(UNSEEN_RELATIVES) if r < 0.4 else rng.choice(UNSEEN_NAMES) if r < 0.7 else rng.choice(T_NAMES)


TRAIN_SLOTS: dict[str, Slot] = {
    "name": _person, "name2": _pick(T_NAMES), "city": _pick(T_CITIES), "city2": _pick(T_CITIES),
    "artist": _pick(ARTISTS), "genre": _pick(GENRES), "playlist": _pick(PLAYLISTS),
    "room": _pick(ROOMS), "device": _pick(DEVICES), "color": _pick(COLORS),
    "day": _pick(DAYS_MORE), "event": _pick(APPOINTMENTS), "message": _pick(FREE_MESSAGES),
    "chore": _pick(CHORES), "place": _pick(PLACES), "food": _pick(FOODS), "food2": _pick(FOODS),
    "thing": _pick(THINGS), "show": _pick(SHOWS), "topic": _pick(TOPICS), "app": _pick(APPS),
    "language": _pick(LANGUAGES), "word": _pick(WORDS), "quantity": _pick(QUANTITIES),
    "unit": _pick(UNITS), "unit2": _pick(UNITS), "adjective": _pick(ADJECTIVES),
    "venue": _pick(VENUES), "time": _time, "duration": _duration, "date": _date,
    "money": _money, "phone": _phone, "amount": _amount, "year": _year,
    "number": _number(1, 999), "small": _number(2, 12), "percent": lambda r: f"{number_to_words(r.randint(1, 100))} percent",
    "temperature": lambda r: f"{number_to_words(r.randint(-5, 35) % 100)} degrees",
    "volume": _number(0, 10),
}  # fmt: skip

_T = _split  # templates are "|"-separated too

TRAIN_TEMPLATES: dict[str, list[str]] = {
    "timers": _T(
        "set a timer for {duration}|start a {duration} timer|timer for {duration} please|"
        "how much time is left on my timer|cancel the {duration} timer|pause the timer|"
        "set an alarm for {time}|wake me up at {time} {day}|set an alarm for {time} {day}|"
        "change my alarm to {time}|turn off the alarm for {time}|snooze for {duration}|"
        "remind me to {chore} in {duration}|remind me to {chore} at {time}|"
        "remind me to {chore} {day}|remind me to {chore} when i get to {place}|"
        "set a reminder to {chore} {day} at {time}|delete all my alarms|"
        "what alarms do i have {day}|start the stopwatch|stop the stopwatch|"
        "count down from {small}|set a repeating alarm for {time} on weekdays"
    ),
    "weather": _T(
        "what's the weather in {city}|what's the weather like {day}|"
        "how is the weather in {city} {day}|will it rain in {city} {day}|"
        "is it going to snow {day}|what's the temperature in {city} right now|"
        "do i need an umbrella {day}|what's the forecast for {city} this week|"
        "how cold is it in {city}|when does the sun set in {city} {day}|"
        "should i wear a jacket {day}|what's the humidity in {city}|"
        "is it windy outside|how hot will it get {day}|what's the air quality in {city}|"
        "when will the rain stop|what's the pollen count {day}|is there a storm coming"
    ),
    "calls": _T(
        "call {name}|call {name} on speaker|call {name}'s mobile|phone {name} and {name2}|"
        "send a message to {name} saying {message}|text {name} {message}|"
        "tell {name} that {message}|read my messages from {name}|did {name} call me {day}|"
        "send {name} a voice message|reply to {name} {message}|video call {name}|"
        "dial {phone}|call {phone}|add {name} to my contacts|what's {name}'s phone number|"
        "send an email to {name} about the {event}|read my latest email|"
        "who called me {day}|block this number|let {name} know {message}|"
        "message {name} and say {message}|ask {name} if {message}|"
        "share my location with {name}|call the nearest {venue}"
    ),
    "music": _T(
        "play some {genre}|play {artist}|play songs by {artist}|play the latest album by {artist}|"
        "shuffle {playlist}|play my {playlist} playlist|add this song to {playlist}|"
        "play {genre} in the {room}|turn the volume up to {volume}|set the volume to {volume}|"
        "skip this song|who sings this song|play something like {artist}|pause the music|"
        "resume the music|play the next episode of my podcast|play the radio|"
        "turn it up|turn it down|louder please|play this song again|what's this song called|"
        "play music for {duration}|stop playing music in {duration}|like this song|"
        "play {show} on the tv|put on {show}|record {show} {day}"
    ),
    "home": _T(
        "turn on the {room} {device}|turn off the {device} in the {room}|switch off all the lights|"
        "dim the {room} lights to {percent}|set the {room} lights to {color}|"
        "set the thermostat to {temperature}|make the {room} warmer|"
        "set the temperature in the {room} to {temperature}|is the {room} light on|"
        "lock the front door|is the back door locked|turn the heating down in the {room}|"
        "start the {device} at {time}|brighten the lights in the {room}|"
        "what's the temperature in the {room}|open the garage|close the blinds in the {room}|"
        "turn off everything in {duration}|set the lights to {percent} brightness|"
        "start the robot vacuum in the {room}|is anyone at the front door|"
        "turn on the {device} when i get home|switch the {device} to eco mode"
    ),
    "calendar": _T(
        "what's on my calendar {day}|add a {event} {day} at {time}|schedule a {event} on {date}|"
        "when is my next {event}|move my {event} to {time}|cancel my {event} {day}|"
        "do i have anything on {date}|set up a meeting with {name} {day} at {time}|"
        "remind me about my {event} on {date}|what time is my {event} {day}|"
        "am i free {day} at {time}|book a {event} for {duration}|"
        "invite {name} to my {event}|how many meetings do i have {day}|"
        "what's my first appointment {day}|clear my calendar for {day}|"
        "when is {name}'s birthday|add {name}'s birthday on {date}"
    ),
    "shopping": _T(
        "add {food} to my shopping list|put {food} and {food2} on the list|"
        "what's on my shopping list|remove {food} from the list|order {food} for delivery|"
        "how much does {food} cost|reorder {food}|track my package|"
        "when will my order arrive|buy {small} {food}|add {quantity} {food} to the recipe|"
        "i need {food} and {food2}|is {food} on sale"
    ),
    "navigation": _T(
        "how do i get to {place}|directions to {place}|navigate to {place}|"
        "how far is {place} from here|how long will it take to get to {place}|"
        "find {adjective} {venue} near me|where is the nearest {venue}|"
        "how's the traffic to {place}|take me home|avoid the highway|"
        "when is the next train to {city}|book a taxi to {place}|"
        "how far is {city} from {city2}|what's the quickest way to {place}|"
        "find parking near {place}|is {place} open {day}|what time does {place} close"
    ),
    "questions": _T(
        "what time is it|what time is it in {city}|what day is it today|what's the date {day}|"
        "what's the time difference with {city}|how long is the drive to {city}|"
        "tell me a joke|what can you do|how many days until {date}|what's the news today|"
        "who wrote {show}|tell me about {topic}|how big is {topic}|what is {topic}|"
        "how does {topic} work|why is the sky blue|how many {unit} in a {unit2}|"
        "convert {amount} to {unit}|what's {number} times {small}|what's {number} plus {number}|"
        "what's {number} divided by {small}|what's {percent} of {number}|"
        "how do you say {word} in {language}|translate {word} into {language}|"
        "spell {word}|what does {word} mean|how old is {artist}|"
        "who won the game {day}|what's the score|when was {topic} discovered|"
        "what happened in {year}|how much is {money} in {language} money|"
        "how many calories are in {food}|how do i make {food}|"
        "what's a good recipe for {food}|how long should i boil {food}|"
        "what's the capital of {city}|how tall is the eiffel tower|flip a coin|"
        "roll a dice|pick a number between one and {number}|is {food} healthy"
    ),
    "device": _T(
        "open {app}|close {app}|take a picture|take a selfie|turn on bluetooth|"
        "turn off wifi|set my phone to silent|turn on do not disturb until {time}|"
        "how much battery do i have|where are {thing}|find {thing}|"
        "take a note {message}|read my notes|turn on the flashlight|"
        "increase the brightness|take a screenshot|restart my phone|"
        "what's my screen time {day}|send a picture to {name}"
    ),
    "money": _T(
        "how much money do i have|send {money} to {name}|pay {name} {money}|"
        "what did i spend {day}|split {money} between {small} people|"
        "how much is a tip on {money}|what's the exchange rate for {language} money|"
        "remind me to pay {name} {money} {day}|transfer {money} to savings"
    ),
}


# ---- the unseen-phrasing grammar (test only) ---------------------------------------------------
UNSEEN_SLOTS: dict[str, Slot] = {
    **TRAIN_SLOTS,
    "who": _unseen_person, "ucity": lambda r: r.choice(UNSEEN_CITIES if r.random() < 0.6 else T_CITIES),
    "uplace": lambda r: r.choice(UNSEEN_PLACES if r.random() < 0.6 else PLACES),
    "ufood": lambda r: r.choice(UNSEEN_FOODS if r.random() < 0.6 else FOODS),
    "udevice": lambda r: r.choice(UNSEEN_DEVICES if r.random() < 0.6 else DEVICES),
}  # fmt: skip

UNSEEN_TEMPLATES: dict[str, list[str]] = {
    "all": _T(
        "please text {who} that dinner is at {time}|could you let {who} know i'm going to be late|"
        "how long will it take to drive to {uplace}|turn the music down a little|"
        "i'd like to hear some {genre}|can you wake me at {time}|"
        "give me a nudge in {duration} to {chore}|is it raining in {ucity} right now|"
        "will i need sunglasses {day}|what's it like outside|ring {who}|"
        "get {who} on the phone|drop {who} a line saying {message}|"
        "could you switch the {udevice} off|make it a bit brighter in here|"
        "it's too cold in the {room}|put the {udevice} on for {duration}|"
        "what have i got going on {day}|am i busy {day}|push my {event} back by {duration}|"
        "pencil in a {event} with {who} on {date}|i'm out of {ufood}|"
        "we need more {ufood}|what's the best way to get to {uplace}|"
        "is there traffic on the way to {uplace}|how many miles is it to {ucity}|"
        "any good {venue} around here|what's the weather going to do {day} in {ucity}|"
        "should i bring a coat to {ucity}|how warm is it in {ucity}|"
        "can you play that song again|i don't like this song|play something relaxing|"
        "crank up the volume|that's too loud|what's playing right now|"
        "remind me about {who}'s birthday|when do i have to leave for {uplace}|"
        "how do you make {ufood}|what goes well with {ufood}|"
        "is it safe to eat {ufood} every day|tell me something interesting about {topic}|"
        "explain {topic} to me like i'm five|who invented the telephone|"
        "what's the square root of {number}|how much is {number} minus {small}|"
        "give me the latest headlines|what's going on in the world|"
        "have i got any new messages|read me what {who} sent|"
        "i can't find {thing}|help me find {thing}|mute my phone for {duration}|"
        "wake me up if it snows|let me know when the laundry is done|"
        "what's the cheapest flight to {ucity}|book me a table for {small} at {time}|"
        "order me a taxi to {uplace}|how late is {uplace} open|"
        "good morning what's the plan for today|thanks that's all for now"
    ),
}


_FORMATTER = string.Formatter()


def _draw(rng: random.Random, templates: dict[str, list[str]], slots: dict[str, Slot]) -> str:
    template = rng.choice(templates[rng.choice(list(templates))])
    fields = {name for _, name, _, _ in _FORMATTER.parse(template) if name}
    return normalize_text(template.format(**{f: slots[f](rng) for f in sorted(fields)}))


def train_sentence(rng: random.Random) -> str:
    """One normalized sentence of the training grammar."""
    return _draw(rng, TRAIN_TEMPLATES, TRAIN_SLOTS)


def unseen_sentence(rng: random.Random) -> str:
    """One normalized sentence of the unseen-phrasing grammar (never used for training)."""
    return _draw(rng, UNSEEN_TEMPLATES, UNSEEN_SLOTS)


def distinct(draw: Callable[[random.Random], str], rng: random.Random, n: int,
             exclude: set[str]) -> list[str]:
    """n distinct sentences from draw(rng) not in exclude (which grows by them)."""
    out: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"could not draw {n} distinct sentences; ask for fewer")
        s = draw(rng)
        if s and s not in exclude:
            exclude.add(s)
            out.append(s)
    return out
