"""Word lists of the rule-made training pairs (hand-written, generic)."""

from __future__ import annotations


def _w(text: str) -> list[str]:
    return text.split()


def _pairs(text: str) -> list[tuple[str, str]]:
    out = []
    for item in text.split(";"):
        a, b = item.split("/")
        out.append((a.strip(), b.strip()))
    return out


LEXNAMES = _w(
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact "
    "noun.attribute noun.body noun.cognition noun.communication noun.event "
    "noun.feeling noun.food noun.group noun.location noun.motive noun.object "
    "noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time "
    "verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
)
ENTITIES: dict[str, list[str]] = {
    "country": _w(
        "India China Japan Germany France Italy Spain Canada Mexico Brazil Russia "
        "Australia Egypt Nigeria Kenya Pakistan Indonesia Turkey Sweden Norway "
        "Poland Argentina Vietnam Thailand Ireland Greece Portugal Chile Peru"
    ),
    "city": _w(
        "London Paris Berlin Madrid Rome Tokyo Delhi Mumbai Bangalore Chicago "
        "Boston Seattle Toronto Sydney Dubai Singapore Moscow Cairo Lagos Beijing "
        "Shanghai Amsterdam Vienna Prague Lisbon Dublin Denver Austin Atlanta "
        "Houston"
    ),
    "language": _w(
        "English French German Spanish Italian Chinese Japanese Hindi Arabic "
        "Russian Portuguese Korean Dutch Turkish"
    ),
    "code": _w(
        "Python Java JavaScript C++ Ruby PHP Rust Go Kotlin Swift Scala Perl "
        "Haskell TypeScript MATLAB"
    ),
    "company": _w(
        "Google Apple Microsoft Amazon Facebook Netflix Tesla Intel IBM Samsung "
        "Oracle Uber Twitter Adobe Nvidia"
    ),
    "person": _w(
        "Trump Obama Modi Clinton Einstein Newton Gandhi Shakespeare Lincoln Putin "
        "Hitler Napoleon Darwin Tesla Jobs Musk"
    ),
    "os": _w("Windows Linux Ubuntu macOS Android iOS"),
    "planet": _w("Mercury Venus Earth Mars Jupiter Saturn Uranus Neptune"),
}
MONTHS = _w(
    "January February March April May June July August September October November "
    "December"
)
WEEKDAYS = _w("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
UNITS = _pairs(
    "km/miles; kilometers/miles; kg/pounds; kilograms/pounds; Celsius/Fahrenheit; "
    "MB/GB; GB/TB; meters/feet; liters/gallons; dollars/euros; rupees/dollars; "
    "hours/minutes; days/weeks; weeks/months; months/years; inches/centimeters; "
    "seconds/milliseconds; grams/ounces"
)
ANTONYMS = _pairs(
    "before/after; buy/sell; increase/decrease; enable/disable; "
    "install/uninstall; encrypt/decrypt; upload/download; import/export; "
    "add/remove; open/close; start/stop; minimum/maximum; first/last; best/worst; "
    "inside/outside; above/below; more/less; faster/slower; legal/illegal; "
    "possible/impossible; win/lose; gain/lose; advantages/disadvantages; "
    "pros/cons; cheap/expensive; cheapest/most expensive; easiest/hardest; "
    "highest/lowest; rich/poor; success/failure; true/false; love/hate; "
    "male/female; men/women; boys/girls; old/young; positive/negative; "
    "public/private; online/offline; push/pull; send/receive; lend/borrow; "
    "accept/reject; allow/block; permanent/temporary; north/south; east/west; "
    "morning/evening; summer/winter"
)
QUANTIFIERS = _pairs(
    "all/some; always/sometimes; everyone/someone; most/few; never/rarely; "
    "everything/something; every/one; many/few; both/either"
)
PHRASES = _pairs(
    "allows you to/lets you; in order to/to; utilize/use; provides/offers; "
    "quickly/fast; a lot of/many; assist/help; display/show; begin/start; "
    "purchase/buy; large/big; obtain/get; have to/need to; would like to/want to; "
    "ensure/make sure; for instance/for example; since/because; create/make; "
    "delete/remove; modify/change; select/choose; locate/find; automobile/car; "
    "physician/doctor; kids/children; film/movie; telephone/phone; repair/fix; "
    "error/mistake; easy/simple; sufficient/enough; intelligent/smart; "
    "commence/start; requires/needs; is able to/can; are able to/can; "
    "numerous/many; individuals/people; attempt/try; additional/extra; "
    "currently/now; therefore/so; however/but; frequently/often"
)
CONTRACTIONS = _pairs(
    "do not/don't; does not/doesn't; is not/isn't; are not/aren't; cannot/can't; "
    "will not/won't; it is/it's; what is/what's; I am/I'm; should not/shouldn't; "
    "did not/didn't; there is/there's"
)
SCOPE_SUFFIXES = [
    "for beginners",
    "for kids",
    "for experts",
    "in India",
    "in the US",
    "in Europe",
    "on Windows",
    "on a Mac",
    "on Android",
    "without a degree",
    "in 2010",
    "in the 19th century",
    "for free",
    "at home",
    "for a small business",
    "in winter",
    "during pregnancy",
    "for dogs",
    "after 40",
    "on a budget",
]
PREFIXES = [
    "Can you tell me: ",
    "I want to know: ",
    "Quick question: ",
    "Could someone explain: ",
    "Please tell me: ",
    "I'm curious: ",
]
TEMPLATES = [
    ("^How do I ", "How can I "),
    ("^How can I ", "What is the best way to "),
    ("^How can I ", "How do I "),
    ("^How do you ", "How does one "),
    ("^What is the best way to ", "How should I "),
    ("^What is ", "What's "),
    ("^What's ", "What is "),
    ("^Can I ", "Is it possible to "),
    ("^Is it possible to ", "Can I "),
    ("^How to ", "How do I "),
    ("^Why do ", "For what reason do "),
    ("^What are some ", "What are a few "),
    ("^What are the ", "Which are the "),
    ("^Which is ", "What is "),
    ("^Should I ", "Is it a good idea to "),
    ("^Where can I ", "Where do I "),
]
AUX = _w(
    "is are was were can could should would will do does did has have may might must"
)
SUBJ = _w("it i you he she we they there this that my your the a")
NEG_CONTRACT = {
    "don't": "do",
    "doesn't": "does",
    "didn't": "did",
    "isn't": "is",
    "aren't": "are",
    "wasn't": "was",
    "weren't": "were",
    "can't": "can",
    "cannot": "can",
    "won't": "will",
    "shouldn't": "should",
    "wouldn't": "would",
    "couldn't": "could",
    "hasn't": "has",
    "haven't": "have",
}
STOP = _w(
    "a an and are as at be by can do does for from how i in is it my not of on or "
    "that the this to was what which who why with you your"
)
