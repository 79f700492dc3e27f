"""Deterministic generator of sample-like article files (and edits to them) for benchmarks."""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import hashlib
import json
import random
import re
import string
import sys
import time
import unicodedata
from bisect import bisect
from collections.abc import Callable
from functools import cache
from json.encoder import encode_basestring as _q  # a JSON string literal is a valid YAML one
from pathlib import Path

import yaml

__all__ = ["add_one", "generate", "generate_one", "main", "mutate"]

# Every host is under the reserved `.example` TLD (RFC 2606): a benchmark run with HTTP
# enrichment switched on can never reach a real site.

# ------------------------------------------------------------------ vocabulary

# (name, host, URL style); the list order is the popularity order (Zipf-weighted below).
# Names and domains starting with a digit (9to5Tech, 24/7 Wire) are written unquoted, as the
# sample writes its provider names.
OUTLETS: list[tuple[str, str, str]] = [
    ("Pacific Wire Service", "pacificwire.example", "gamp"),
    ("The Circuit Ledger", "www.circuitledger.example", "wp"),
    ("Byteline", "www.byteline.example", "wp"),
    ("Orbital Report", "orbitalreport.example", "story"),
    ("Metro Tech Times", "www.metrotechtimes.example", "mint"),
    ("Northwind Science Daily", "news.northwindscience.example", "plain"),
    ("Signal & Noise", "www.signalandnoise.example", "wp"),
    ("DevWire", "devwire.example", "story"),
    ("Telemetry", "telemetry.example", "story"),
    ("Kernel Weekly", "kernelweekly.example", "plain"),
    ("Lab Notes Network", "www.labnotes.example", "seg"),
    ("The Daily Ampere", "dailyampere.example", "wp"),
    ("Silicon Meadow", "www.siliconmeadow.example", "mint"),
    ("Harbor City Herald", "harborcityherald.example", "amphtml"),
    ("Quantum Dispatch", "www.quantumdispatch.example", "gamp"),
    ("GreenGrid Journal", "greengridjournal.example", "wp"),
    ("The Compile Step", "compilestep.example", "wp"),
    ("Northern Silicon Review", "www.northernsilicon.example", "plain"),
    ("Market Ledger", "markets.marketledger.example", "content"),
    ("Deep Field Magazine", "www.deepfieldmag.example", "wp"),
    ("The Gradient Post", "gradientpost.example", "story"),
    ("Patch Notes Weekly", "www.patchnotesweekly.example", "story"),
    ("9to5Tech", "9to5tech.example", "wp"),
    ("Valley Courier", "valleycourier.example", "amphtml"),
    ("Debug Daily", "www.debugdaily.example", "qamp"),
    ("Biometric Brief", "www.biometricbrief.example", "plain"),
    ("Engineering Wire", "insights.engineeringwire.example", "seg"),
    ("The Lakeside Times", "lakesidetimes.example", "amphtml"),
    ("Continental Tech", "www.continentaltech.example", "qamp"),
    ("Pixel & Pulse", "pixelpulse.example", "wp"),
    ("Research Roundup", "www.researchroundup.example", "plain"),
    ("Channel 12 News", "metro.channel12.example", "story"),
    ("24/7 Wire", "www.247wire.example", "story"),
    ("The Policy Desk", "www.policydesk.example", "plain"),
    ("Atlas Business Review", "www.atlasbusiness.example", "content"),
    ("Startup Gazette", "startupgazette.example", "wp"),
    ("Health Tech Today", "www.healthtechtoday.example", "seg"),
]

# ~60 topics, most popular first; drawn Zipf-distributed. Look-alikes (C, C++, C#, F#),
# names with symbols (AR/VR, Science & Society, Node.js, Économie) and names starting with a
# digit (5G, 3D Printing: unquoted, a YAML reader has to tell them from numbers) are deliberate.
TOPICS: list[str] = [
    "AI",
    "Cybersecurity",
    "Machine Learning",
    "Privacy",
    "Cloud Computing",
    "Startups",
    "Smartphones",
    "Space",
    "Climate",
    "Electric Vehicles",
    "Semiconductors",
    "Computer Vision",
    "Open Source",
    "Robotics",
    "Social Media",
    "Regulation",
    "Gaming",
    "Healthcare",
    "Quantum Computing",
    "Blockchain",
    "Python",
    "Linux",
    "JavaScript",
    "C++",
    "Rust",
    "C#",
    "C",
    "Go",
    "5G",
    "3D Printing",
    "Data Centers",
    "Wearables",
    "Biotech",
    "Batteries",
    "Renewable Energy",
    "Autonomous Vehicles",
    "Drones",
    "AR/VR",
    "Fintech",
    "E-commerce",
    "Streaming",
    "Telecom",
    "Supply Chain",
    "Education",
    "Remote Work",
    "Databases",
    "DevOps",
    "Kubernetes",
    "WebAssembly",
    "Browsers",
    "Natural Language Processing",
    "Neuroscience",
    "Genomics",
    "Astronomy",
    "Materials Science",
    "Internet of Things",
    "Science & Society",
    "Node.js",
    "F#",
    "Économie",
    "Java",
]

# Occasional alternative spellings of the same topic (case, whitespace, Unicode form).
TOPIC_VARIANTS: dict[str, tuple[tuple[str, float], ...]] = {
    "AI": (("ai", 0.03), (" AI ", 0.02), ("Ai", 0.01)),
    "Machine Learning": (("machine learning", 0.05), ("Machine  Learning", 0.01)),
    "Cybersecurity": (("CyberSecurity", 0.04), ("cybersecurity ", 0.02)),
    "Open Source": (("open source", 0.06),),
    "Internet of Things": (("Internet Of Things", 0.1),),
    "Économie": ((unicodedata.normalize("NFD", "Économie"), 0.3), ("économie", 0.05)),
    "JavaScript": (("Javascript", 0.08),),
}

# Subject phrases per topic, used in titles and excerpts; topics without an entry use
# generic phrases built from the topic name.
THINGS: dict[str, tuple[str, ...]] = {
    "AI": ("AI assistant", "language model", "chatbot", "AI system", "generative AI tool"),
    "Cybersecurity": (
        "ransomware defences",
        "zero-day patch",
        "password manager",
        "breach disclosure rules",
        "phishing filter",
    ),
    "Machine Learning": ("training pipeline", "recommendation model", "forecasting model", "ML platform"),
    "Privacy": ("data-protection rules", "tracking ban", "ad-targeting limits", "consent banners"),
    "Cloud Computing": ("cloud region", "serverless platform", "cloud storage service"),
    "Startups": ("seed fund", "accelerator programme", "start-up campus"),
    "Smartphones": ("foldable phone", "budget handset", "phone camera upgrade"),
    "Space": ("lunar lander", "satellite constellation", "Mars sample mission", "reusable rocket"),
    "Climate": ("carbon-capture plant", "emissions tracker", "heat-pump subsidy"),
    "Electric Vehicles": ("charging network", "electric pickup", "battery swap scheme"),
    "Semiconductors": ("chip plant", "3-nanometre process", "microcontroller supply"),
    "Computer Vision": ("facial recognition", "image-recognition system", "camera-based inspection"),
    "Open Source": ("open-source licence", "maintainer fund", "package registry"),
    "Robotics": ("warehouse robot", "robot arm", "delivery robot"),
    "Social Media": ("content moderation policy", "short-video feature", "verification scheme"),
    "Regulation": ("antitrust case", "digital markets rules", "platform liability law"),
    "Gaming": ("cloud gaming service", "handheld console", "game engine"),
    "Healthcare": ("telehealth service", "diagnostic app", "hospital software"),
    "Quantum Computing": ("quantum processor", "error-corrected qubit", "quantum cloud service"),
    "Python": ("Python release", "type checker", "Python packaging tool"),
    "C++": ("C++20 modules", "C++ compiler", "C++ standard library"),
    "C#": ("C# 10 preview", ".NET runtime", "C# source generators"),
    "C": ("C standard draft", "C compiler", "embedded C toolchain"),
    "Rust": ("Rust compiler", "Rust-based driver", "memory-safe rewrite"),
    "Linux": ("Linux kernel release", "Linux distribution", "kernel scheduler"),
}
GENERIC_THINGS = ("{t} tools", "{t} market", "{t} research", "{t} platform", "{t} policy", "{t} start-ups")

ORGS = (
    "Halyard Networks",
    "Arcturus Labs",
    "Brightwater Systems",
    "Kestrel Robotics",
    "Northgate Cloud",
    "Lumen Fields",
    "Tidewater Semiconductor",
    "Orchid Health",
    "Parallax Games",
    "Cobalt Mobility",
    "Finch Analytics",
    "Meridian Telecom",
    "Saltmarsh Energy",
    "Vantage Orbital",
    "Quill Software",
    "Greyhound Bio",
    "Ironbark Security",
    "Juniper Quantum",
    "Mosaic Media",
    "Pioneer Batteries",
    "the European Commission",
    "the city council",
    "the state attorney general",
    "a university consortium",
    "the national space agency",
    "the standards committee",
    "a group of researchers",
)
PLACES = (
    "New York",
    "California",
    "the EU",
    "Britain",
    "India",
    "Japan",
    "Germany",
    "Brazil",
    "Canada",
    "South Korea",
    "Australia",
    "Texas",
    "France",
    "Singapore",
    "Kenya",
    "Mexico",
    "Taiwan",
    "Nigeria",
)
AUDIENCES = (
    "developers",
    "hospitals",
    "small businesses",
    "schools",
    "regulators",
    "investors",
    "retailers",
    "researchers",
    "gamers",
    "drivers",
    "farmers",
    "banks",
    "city officials",
    "parents",
    "engineers",
)
ADJ = ("new", "cheaper", "faster", "open", "long-awaited", "experimental", "low-power", "updated", "smaller")
ADJ2 = ("cheaper", "safer", "faster", "more private", "easier to use", "more reliable")
CLAIMS = (
    "could cut costs by a third",
    "is less reliable than advertised",
    "reduces errors in early trials",
    "is still years away",
    "raises new privacy concerns",
    "works better than expected",
    "widens the gap",
)
ISSUES = (
    "supply shortages",
    "safety concerns",
    "regulatory questions",
    "a security review",
    "weak demand",
    "staff departures",
    "a patent dispute",
)
ACTIONS = ("expand", "pause", "open-source", "test", "launch", "scale back", "rebuild", "price")
REASONS = (
    "citing strong demand",
    "after months of criticism",
    "as competition intensifies",
    "following a pilot that ran last year",
    "without giving a timetable",
    "pending regulatory approval",
)
TRENDS = (
    "face rising costs",
    "look for alternatives",
    "adopt similar tools",
    "call for clearer rules",
    "report growing interest",
)
FORECASTS = ("double", "reach most households", "become standard", "fall in price", "face new rules")
CRITICISMS = ("is rushed", "ignores smaller players", "puts users' data at risk", "is overhyped")
BENEFITS = ("will save money", "fills a real gap", "makes services more accessible", "improves safety")
QUOTES = (
    "promising but preliminary",
    "a real step forward",
    "hard to reproduce",
    "a wake-up call",
    "exactly what the field needed",
)
PEOPLE = (
    "Dr. Amara Osei",
    "Lena Fischer",
    "Rahul Mehta",
    "Sofia Alvarez",
    "Kenji Watanabe",
    "Grace O'Neill",
    "Tomasz Nowak",
    "Aisha Bello",
    "Mateo Rossi",
    "Ingrid Larsen",
)
UNIVERSITIES = (
    "Riverside University",
    "the Northfield Institute",
    "Lakeshore Polytechnic",
    "the University of Eastbrook",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
SECTIONS = ("technology", "science", "business", "world", "national", "innovation")
UTM = (
    "utm_source=twitter&utm_medium=social",
    "utm_source=newsletter&utm_medium=email&utm_campaign=daily",
    "utm_source=rss&utm_medium=feed",
    "utm_source=facebook&utm_medium=social&utm_campaign=share",
)
IMAGE_SIZES = (
    (1200, 675),
    (1600, 900),
    (800, 450),
    (1024, 683),
    (2400, 1600),
    (640, 360),
    (1280, 720),
    (960, 540),
    (600, 337),
    (3000, 1785),
)

TITLES = (
    "{Org} unveils {a_adj} {thing} for {aud}",
    "{Org} to expand {thing} to {place}",
    "Why {aud} are betting on {thing}",
    "{Place} regulators open inquiry into {thing} from {org}",
    "Study finds the {thing} {claim}",
    "{num} things to know about the {thing}",
    "{Org} raises ${money} million for its {thing}",
    "{Thing}: what {aud} need to know",
    "Inside the plan to make the {thing} {adj2}",
    "{Org} delays its {thing} amid {issue}",
    "What the {thing} could mean for {aud}",
    "The race to build {a_adj} {thing} is heating up",
    "{Aud} in {place} push back against the {thing}",
    "{Org} cuts the price of its {thing} as competition grows",
    "'{Quote}': researchers react to {thing}",
)
SENTENCES = (
    "{Org} said on {weekday} that it would {action} the {thing}, {reason}.",
    "The move comes as {aud} in {place} {trend}.",
    "Analysts expect the {thing} to {forecast} by {year}.",
    "Critics say the {thing} {criticism}, while supporters argue it {benefit}.",
    "The company did not disclose financial terms.",
    "Early tests with {aud} in {place} showed mixed results.",
    '{Person}, a researcher at {university}, called the results "{quote}".',
    "It is the {ordinal} such announcement this {period}.",
    "{Org} declined to comment on the {thing}.",
)
ORDINALS = ("second", "third", "fourth", "latest")
PERIODS = ("month", "quarter", "year")

# Filled in lazily: cumulative Zipf weights for random.choices(cum_weights=...).
_ZIPF_CACHE: dict[tuple[int, float], list[float]] = {}


def _zipf(n: int, s: float) -> list[float]:
    key = (n, s)
    if key not in _ZIPF_CACHE:
        acc, out = 0.0, []
        for r in range(1, n + 1):
            acc += 1.0 / r**s
            out.append(acc)
        _ZIPF_CACHE[key] = out
    return _ZIPF_CACHE[key]


# ------------------------------------------------------------------ building blocks


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower().replace("'", "").replace("++", "pp").replace("#", "sharp"))
    s = s.strip("-")
    while len(s) > 40 and "-" in s:
        s = s.rsplit("-", 1)[0]
    return s or "story"


def _pick_topics(rng: random.Random) -> list[str]:
    cum = _zipf(len(TOPICS), 1.05)
    k = rng.choices((1, 2, 3, 4), cum_weights=(35, 70, 90, 100))[0]
    names: list[str] = []
    while len(names) < k:
        name = TOPICS[bisect(cum, rng.random() * cum[-1])]
        if name in names:
            continue
        names.append(name)
    out = []
    for name in names:
        spelled = name
        for variant, p in TOPIC_VARIANTS.get(name, ()):
            if rng.random() < p:
                spelled = variant
                break
        out.append(spelled)
    return out


def _thing(rng: random.Random, topic: str) -> str:
    pool = THINGS.get(topic)
    if pool:
        return rng.choice(pool)
    # "Renewable Energy" reads as "renewable energy" mid-sentence; "5G", "AR/VR", "Node.js" stay
    word = topic if re.search(r"[A-Z]{2}|[^A-Za-zÀ-ÿ ]|[a-z][A-Z]", topic) else topic.lower()
    return rng.choice(GENERIC_THINGS).format(t=word)


def _an(phrase: str) -> str:
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


@cache
def _plain(text: str) -> str:
    """`text` unquoted where YAML reads it back as the same string (as the sample writes topic
    and provider names: `- AI`, `name: Associated Press`), else as a quoted string."""
    try:
        same = yaml.load(f"k: {text}\n", Loader=yaml.SafeLoader) == {"k": text}
    except yaml.YAMLError:
        same = False
    return text if same else _q(text)


_POOLS: dict[str, tuple] = {
    "org": ORGS,
    "aud": AUDIENCES,
    "place": PLACES,
    "adj": ADJ,
    "adj2": ADJ2,
    "claim": CLAIMS,
    "issue": ISSUES,
    "num": tuple(range(3, 13)),
    "money": (5, 12, 40, 75, 120, 300),
    "weekday": WEEKDAYS,
    "action": ACTIONS,
    "reason": REASONS,
    "trend": TRENDS,
    "forecast": FORECASTS,
    "year": tuple(range(2022, 2031)),
    "criticism": CRITICISMS,
    "benefit": BENEFITS,
    "quote": QUOTES,
    "person": PEOPLE,
    "university": UNIVERSITIES,
    "ordinal": ORDINALS,
    "period": PERIODS,
}
_FIELDS: dict[str, tuple[str, ...]] = {}


def _fill(rng: random.Random, template: str, thing: str) -> str:
    """Fill a template; only the fields it names are drawn (`{Org}`: capitalised, `{a_adj}`: "a"/"an")."""
    names = _FIELDS.get(template)
    if names is None:
        names = _FIELDS[template] = tuple(f for _, f, _, _ in string.Formatter().parse(template) if f)
    values: dict[str, object] = {}
    for name in names:
        if name == "thing":
            values[name] = thing
        elif name == "Thing":
            values[name] = _cap(thing)
        elif name == "a_adj":
            values[name] = _an(rng.choice(ADJ))
        elif name[0].isupper():
            values[name] = _cap(str(rng.choice(_POOLS[name.lower()])))
        else:
            values[name] = rng.choice(_POOLS[name])
    return template.format_map(values)


def _title(rng: random.Random, topic: str) -> str:
    return _fill(rng, rng.choice(TITLES), _thing(rng, topic))


def _excerpt(rng: random.Random, topic: str, sentences: int | None = None) -> str:
    thing = _thing(rng, topic)
    n = sentences or rng.choice((1, 1, 1, 1, 2, 2, 3))
    text = " ".join(_fill(rng, rng.choice(SENTENCES), thing) for _ in range(n))
    if not sentences and len(text) > 150 and rng.random() < 0.5:  # cut mid-sentence, as aggregators do
        text = text[:150].rsplit(" ", 1)[0]
    return text


_EPOCH = _dt.date(2020, 1, 1).toordinal()


def _date(rng: random.Random, day: int | None = None) -> tuple[str, str, str]:
    """(yaml value, YYYY, MM) for a random time in 2020-2021 (or on `day`, an ordinal)."""
    d = _dt.date.fromordinal(day if day is not None else _EPOCH + rng.randrange(731))
    stamp = f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00"
    return stamp, f"{d.year:04d}", f"{d.month:02d}"


def _urls(rng: random.Random, outlet: tuple[str, str, str], slug: str, stamp: str, uid: int) -> tuple[str, str | None]:
    """(webUrl, ampWebUrl or None) in the outlet's URL style; `uid` makes the URL unique."""
    _, host, style = outlet
    y, m, d = stamp[:4], stamp[5:7], stamp[8:10]
    if style == "wp":
        u = f"https://{host}/{y}/{m}/{d}/{slug}-{uid}/"
        return u, u + "amp/"
    if style == "story":
        u = f"https://{host}/story/{slug}-{uid}/"
        return u, u + "amp"
    if style == "gamp":
        return f"https://{host}/article/{slug}-{uid}/", f"https://{host}/google-amp/article/{slug}-{uid}/"
    if style == "mint":
        sec = SECTIONS[uid % len(SECTIONS)]
        nid = 11600000000000 + uid
        return (f"https://{host}/{sec}/{slug}-{nid}.html", f"https://{host}/{sec}/{slug}/amp-{nid}.html")
    if style == "seg":
        sec = SECTIONS[uid % len(SECTIONS)]
        return f"https://{host}/{sec}/news/{slug}-{uid}", f"https://{host}/{sec}/news/amp/{slug}-{uid}"
    if style == "qamp":
        sec = SECTIONS[uid % len(SECTIONS)]
        u = f"https://{host}/{sec}/{slug}-{uid}/"
        return u, u + "?amp"
    if style == "amphtml":
        h = hashlib.blake2b(f"{host}{uid}".encode(), digest_size=16).hexdigest()
        guid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        base = f"https://{host}/news/{SECTIONS[uid % len(SECTIONS)]}/{slug}/article_{guid}"
        return base + ".html", base + ".amp.html"
    if style == "content":
        h = hashlib.blake2b(f"{host}{uid}".encode(), digest_size=16).hexdigest()
        return f"https://{host}/content/{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", None
    return f"https://{host}/{y}/{m}/{slug}-{uid}.html", None  # plain


def _domain(host: str) -> str:
    """The provider domain shown for a host: its last two labels (insights.x.example -> x.example)."""
    return ".".join(host.rsplit(".", 2)[-2:])


def _cdn(amp: str) -> str:
    host, _, rest = amp[8:].partition("/")
    return f"https://{host.replace('-', '--').replace('.', '-')}.cdn.ampproject.org/c/s/{host}/{rest}"


def _image(rng: random.Random, host: str, slug: str, stamp: str) -> tuple[str, int, int]:
    w, h = rng.choice(IMAGE_SIZES)
    bare = host.removeprefix("www.")
    kind = rng.randrange(4)
    if kind == 0:
        url = f"https://{host}/wp-content/uploads/{stamp[:4]}/{stamp[5:7]}/{slug[:40].rstrip('-')}-{w}x{h}.jpg"
    elif kind == 1:
        url = f"https://media.{bare}/photos/{rng.getrandbits(96):024x}/master/pass/{slug[:30].rstrip('-')}.jpg"
    elif kind == 2:
        url = f"https://img.{bare}/img/{stamp[:4]}/{stamp[5:7]}/{stamp[8:10]}/{w}x{h}/{rng.getrandbits(64):016x}.jpg"
    else:
        url = f"https://cdn.{bare}/images/{rng.getrandbits(48):012x}.jpeg?w={w}&h={h}&fit=crop"
    return url, w, h


class _Meta:
    """What other articles need to know about an article to list it as related."""

    __slots__ = ("amp", "excerpt", "image", "outlet", "quality", "stamp", "title", "topics", "web")

    def __init__(self, seed: int, uid: int) -> None:
        rng = random.Random(seed * 1_000_003 + uid)
        self.topics = _pick_topics(rng)
        primary = unicodedata.normalize("NFC", self.topics[0].strip())
        self.outlet = OUTLETS[bisect(_zipf(len(OUTLETS), 0.9), rng.random() * _zipf(len(OUTLETS), 0.9)[-1])]
        self.stamp, _, _ = _date(rng)
        self.title = _title(rng, primary)
        self.excerpt = _excerpt(rng, primary)
        if rng.random() < 0.3:  # typographic quotes, as in the sample (`‘Ban the Scan’`, `tech’s`)
            self.title = re.sub(r"^'", "‘", self.title).replace("'", "’")
            self.excerpt = self.excerpt.replace("'", "’")
        self.web, self.amp = _urls(rng, self.outlet, _slug(self.title), self.stamp, uid)
        self.quality = rng.randrange(12, 96)
        self.image = _image(rng, self.outlet[1], _slug(self.title), self.stamp) if rng.random() < 0.88 else None


def _fmt_date(rng: random.Random, stamp: str) -> str:
    r = rng.random()
    if r < 0.05:
        return f'"{stamp}Z"'
    if r < 0.08:
        return stamp + rng.choice(("+02:00", "-05:00", "+05:30", "+01:00"))
    return stamp + "Z"


def _images_block(out: list[str], ind: str, image: tuple[str, int, int]) -> None:
    url, w, h = image
    out.append(
        f"{ind}images:\n{ind}  - url: {_q(url)}\n{ind}    width: {w}\n{ind}    height: {h}\n{ind}    isCached: true"
    )


def _related_lines(out: list[str], item: dict) -> None:
    """One related item, in the sample's key order; absent keys are left out."""
    first = True
    for key in ("title", "excerpt", "publishedDateTime", "webUrl", "ampWebUrl", "cdnAmpWebUrl"):
        v = item.get(key)
        if v is None:
            continue
        out.append(f"{'  - ' if first else '    '}{key}: {v if key == 'publishedDateTime' else _q(v)}")
        first = False
    out.append("    type: article")
    prov = item.get("provider")
    if prov:
        out.append(f"    provider:\n      name: {_plain(prov[0])}\n      domain: {_domain(prov[1])}")
    if item.get("quality") is not None:
        out.append(f"    quality: {item['quality']}")
    if item.get("image"):
        _images_block(out, "    ", item["image"])


def _link_item(rng: random.Random, m: _Meta) -> dict:
    """A related item pointing at another generated article, through a URL variant."""
    item = {
        "title": m.title,
        "excerpt": m.excerpt,
        "publishedDateTime": m.stamp + "Z",
        "provider": (m.outlet[0], m.outlet[1]),
        "quality": m.quality,
        "image": m.image,
    }
    r = rng.random()
    if m.amp is None or r < 0.4:
        if r < 0.2 or m.amp is None and r < 0.75:
            item["webUrl"] = m.web
        else:
            sep = "&" if "?" in m.web else "?"
            item["webUrl"] = f"{m.web}{sep}{rng.choice(UTM)}"
        if m.amp and rng.random() < 0.4:
            item["ampWebUrl"] = m.amp
            item["cdnAmpWebUrl"] = _cdn(m.amp)
    elif r < 0.7:
        item["webUrl"] = m.amp
    else:
        item["webUrl"] = _cdn(m.amp)
    if rng.random() < 0.6:
        item["image"] = None
    return item


def _outward_item(rng: random.Random, m: _Meta) -> dict:
    """A related item pointing outside the corpus (a page that is not an article file)."""
    if rng.random() < 0.03:  # bare link: enrichment has to fill in title and excerpt
        return {"webUrl": m.web, "provider": (m.outlet[0], m.outlet[1]) if rng.random() < 0.5 else None}
    item = {
        "title": m.title,
        "excerpt": m.excerpt if rng.random() < 0.85 else None,
        "publishedDateTime": m.stamp + "Z",
        "webUrl": m.web,
        "provider": (m.outlet[0], m.outlet[1]),
        "quality": m.quality,
        "image": m.image if rng.random() < 0.4 else None,
    }
    if m.amp and rng.random() < 0.25:
        item["ampWebUrl"] = m.amp
        item["cdnAmpWebUrl"] = _cdn(m.amp)
    return item


def _body(rng: random.Random, topic: str, host: str) -> str:
    paras = []
    for _ in range(rng.randint(2, 4)):
        paras.append(_excerpt(rng, topic, rng.randint(2, 3)))
    if rng.random() < 0.4:
        points = dict.fromkeys(f"- {_cap(_thing(rng, topic))} {rng.choice(CLAIMS)};" for _ in range(3))
        items = "\n".join(points)
        paras.insert(1, "Key points:\n\n" + items)
    label = rng.choice(("full statement", "earlier coverage", "the report", "our explainer"))
    link = f"[{label}](https://{host}/{_slug(topic)}/{rng.randrange(10**6)})"
    paras.append(f"Read {link}." if rng.random() < 0.6 else f"More on this [here](/about) and in {link}.")
    return "\n\n".join(paras) + "\n"


def _secured(rng: random.Random) -> str:
    """An opaque token shaped like the samples': base64 of 256 or 272 bytes (ending `==` or `=`),
    `;`, base64 of 16 bytes (ending `==`). About one in six starts with a digit."""
    size = 272 if rng.random() < 0.2 else 256
    return base64.b64encode(rng.randbytes(size)).decode() + ";" + base64.b64encode(rng.randbytes(16)).decode()


def _render(
    rng: random.Random, m: _Meta, related: list[dict], published: bool | None = None, no_topics: float = 0.06
) -> str:
    """The text of one article file (`published`: None = drawn, 70 % true; `no_topics`: the
    share written `topics: []`)."""
    if published is None:
        published = rng.random() < 0.7
    out = [
        "---",
        f"category: {rng.choice(('news', 'news', 'news', 'analysis', 'opinion'))}",
        f"title: {_q(m.title)}",
        f"excerpt: {_q(m.excerpt)}",
        f"publishedDateTime: {_fmt_date(rng, m.stamp)}",
        f"originalUrl: {_q(m.web)}",
        f"webUrl: {_q(m.web)}",
        "type: article",
        f"quality: {m.quality}",
        f"heat: {rng.choice((-1, -1, -1, rng.randrange(100)))}",
        f"published: {'true' if published else 'false'}",
        "",
        f"provider:\n  name: {_plain(m.outlet[0])}\n  domain: {_domain(m.outlet[1])}",
        "",
    ]
    if rng.random() < no_topics:  # an article its source gave no topics: an empty flow list
        out.append("topics: []")
    else:
        out.append("topics:")
        out.extend(f"  - {_plain(t)}" for t in m.topics)
    out.append("")
    if m.image:
        _images_block(out, "", m.image)
        out.append("")
    if related:
        out.append("related:")
        for item in related:
            _related_lines(out, item)
    else:
        out.append("related: []")
    out.append("")
    if rng.random() < 0.5:
        # Quoted as in the sample, or unquoted: base64 and `;` read as a plain string, but one
        # that may start with a digit or `+`, so the YAML screen has to tell it from a number.
        secured = _secured(rng)
        out.append(f"secured: {_q(secured) if rng.random() < 0.5 else secured}")
    out.append("---\n")
    text = "\n".join(out)
    if rng.random() < 0.2:
        text += "\n" + _body(rng, m.topics[0].strip(), m.outlet[1])
    return text


def _related_count(rng: random.Random) -> int:
    # log-normal, mean ~13, long tail (the reference sample has 26)
    return min(40, int(rng.lognormvariate(2.35, 0.7)))


# Outward (non-corpus) related pages get ids from here on, so they never collide with articles.
_OUTWARD_BASE = 50_000_000


def _file_name(uid: int, m: _Meta, rng: random.Random) -> str:
    digest = hashlib.blake2b(m.web.encode(), digest_size=8).hexdigest()
    return f"{uid:06d}_{digest}{'.md' if rng.random() < 0.1 else '.txt'}"


def generate_one(
    i: int,
    rng: random.Random,
    metas: list[_Meta],
    by_topic: dict[str, list[int]],
    outward: Callable[[int], _Meta],
) -> tuple[str, str]:
    """(relative path, text) of article `i`; its related items come from `metas` and `outward`."""
    m = metas[i]
    n = len(metas)
    related: list[dict] = []
    seen = {i}
    count = 0 if rng.random() < 0.08 else _related_count(rng)  # `related: []`, as sources write it
    for _ in range(count):
        if rng.random() < 0.35 and n > 1:
            bucket = by_topic.get(m.topics[0].strip().casefold(), ())
            j = rng.choice(bucket) if bucket and rng.random() < 0.7 else rng.randrange(n)
            if j in seen:
                continue
            seen.add(j)
            related.append(_link_item(rng, metas[j]))
        else:
            k = int(rng.random() ** 2 * (2 * n + 50))  # popular outside pages recur across files
            if -k - 1 in seen:
                continue
            seen.add(-k - 1)
            related.append(_outward_item(rng, outward(k)))
    related.sort(key=lambda it: -(it.get("quality") or 0))
    text = _render(rng, m, related)
    return f"{m.stamp[:4]}/{m.stamp[5:7]}/{_file_name(i, m, rng)}", text


def _write(out_dir: Path, rel: str, text: str, made: set[str]) -> Path:
    folder = rel.rsplit("/", 1)[0]
    if folder not in made:
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
        made.add(folder)
    path = out_dir / rel
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    return path


def _outward_factory(seed: int) -> Callable[[int], _Meta]:
    cache: dict[int, _Meta] = {}

    def outward(k: int) -> _Meta:
        m = cache.get(k)
        if m is None:
            m = cache[k] = _Meta(seed, _OUTWARD_BASE + k)
        return m

    return outward


def generate(out_dir: Path, n: int, seed: int = 1) -> None:
    """Write `n` article files under `out_dir` (YYYY/MM/NNNNNN_<hex>.txt|.md); same seed and n, same bytes."""
    out_dir = Path(out_dir)
    metas = [_Meta(seed, i) for i in range(n)]
    by_topic: dict[str, list[int]] = {}
    for i, m in enumerate(metas):
        by_topic.setdefault(m.topics[0].strip().casefold(), []).append(i)
    outward = _outward_factory(seed)
    made: set[str] = set()
    for i in range(n):
        rng = random.Random(seed * 7_919 + i * 2_654_435_761)
        rel, text = generate_one(i, rng, metas, by_topic, outward)
        _write(out_dir, rel, text, made)


# ------------------------------------------------------------------ edits for benchmarks

_NAME = re.compile(r"^(\d+)_[0-9a-f]{16}\.(txt|md)$")


def _article_files(out_dir: Path) -> list[Path]:
    return sorted(p for p in Path(out_dir).rglob("*") if p.is_file() and _NAME.match(p.name))


def mutate(out_dir: Path, fraction: float, seed: int = 1) -> list[Path]:
    """Give round(fraction * files) of the files a new excerpt; returns the changed paths.

    The same seed picks the same files; every call changes their bytes (title, webUrl and
    file names are kept, so each change is an edit of the same article)."""
    files = _article_files(out_dir)
    k = max(0, min(len(files), round(len(files) * fraction)))
    rng = random.Random(f"mutate:{seed}:{len(files)}")
    chosen = sorted(rng.sample(files, k))
    for p in chosen:
        text = p.read_text(encoding="utf-8")
        start = text.find("\nexcerpt: ")
        new_line = f"\nexcerpt: {_q(_excerpt(rng, rng.choice(TOPICS[:20])) + f' (Updated, revision {seed}.)')}"
        if start >= 0:
            end = text.index("\n", start + 1)
            new = text[:start] + new_line + text[end:]
        else:  # no excerpt yet: add one after the title
            t = text.index("\ntitle: ")
            end = text.index("\n", t + 1)
            new = text[:end] + new_line + text[end:]
        if new == text:
            new = new.replace(new_line, new_line[:-3] + ', again.)"', 1)
        with open(p, "w", encoding="utf-8", newline="") as fh:
            fh.write(new)
    return chosen


def _field(text: str, key: str) -> str | None:
    """The string value of a top-level `key: "..."` line as written by this module."""
    at = text.find(f"\n{key}: ")
    if at < 0:
        return None
    line = text[at + len(key) + 3 : text.index("\n", at + 1)]
    if line.startswith('"') and line.endswith('"'):
        return json.loads(line)
    return line


def add_one(out_dir: Path, seed: int = 1) -> Path:
    """Add one new, published article file (next free number) listing existing articles as related."""
    out_dir = Path(out_dir)
    files = _article_files(out_dir)
    uid = 1 + max((int(_NAME.match(p.name).group(1)) for p in files), default=-1)
    rng = random.Random(f"add:{seed}:{uid}")
    m = _Meta(seed + 7_777, uid)
    existing = rng.sample(files, min(len(files), rng.randint(3, 10)))
    related: list[dict] = []
    for p in existing:
        text = p.read_text(encoding="utf-8")
        title, web = _field(text, "title"), _field(text, "webUrl")
        if not title or not web:
            continue
        sep = "&" if "?" in web else "?"
        url = web if rng.random() < 0.6 else f"{web}{sep}{rng.choice(UTM)}"
        related.append(
            {"title": title, "excerpt": _field(text, "excerpt"), "webUrl": url, "quality": rng.randrange(12, 96)}
        )
    outward = _outward_factory(seed + 7_777)
    for _ in range(rng.randint(2, 8)):
        related.append(_outward_item(rng, outward(rng.randrange(1000))))
    related.sort(key=lambda it: -(it.get("quality") or 0))
    text = _render(rng, m, related, published=True, no_topics=0.0)  # it shows in topic feeds
    rel = f"{m.stamp[:4]}/{m.stamp[5:7]}/{_file_name(uid, m, rng)}"
    return _write(out_dir, rel, text, set())


# ------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--files", type=int, required=True, help="number of article files")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.files < 0:
        ap.error("--files must be >= 0")
    t0 = time.perf_counter()
    generate(args.out_dir, args.files, args.seed)
    print(f"wrote {args.files} files to {args.out_dir} in {time.perf_counter() - t0:.2f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
