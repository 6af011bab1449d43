"""Generated sample mail for ``commine demo``: customer emails to a fictional insurer's shared mailbox.

Northwind Mutual, an insurer and bank, receives mail at ``service@northwind.example`` about billing,
claims, policy changes and complaints. ``generate`` writes believable Communications Mining
comments for a handful of intents, deterministically for a seed, so the demo and the tests have
data to ingest, label and train on without a server. Bodies are assembled from several templates
per intent (openings, main requests, details, closings, greetings and sign-offs) and filled with
random names, policy and claim numbers, amounts and dates, so messages are not near-duplicates;
some sentences deliberately overlap between intents (a complaint that mentions a refund, a
cancellation that asks for premium back). A few messages have no intent (thank-you notes,
out-of-office replies) and about one in ten is a reply in an earlier thread.

Pure standard library, no I/O: everything comes from one ``random.Random(seed)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

MAILBOX = "service@northwind.example"
#: Where timestamps start when ``generate`` is not given ``start``.
DEFAULT_START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
#: Timestamps spread over this many days from the start.
SPREAD_DAYS = 90
#: Share of messages written without an intent (thank-you notes, out-of-office replies).
NO_INTENT_SHARE = 0.08
#: Share of messages that are replies in an earlier thread.
REPLY_SHARE = 0.10

REFUND = "Billing > Refund"
PAYMENT_FAILED = "Billing > Payment Failed"
NEW_CLAIM = "Claims > New Claim"
CLAIM_STATUS = "Claims > Status Update"
CANCELLATION = "Policy > Cancellation"
CHANGE_OF_ADDRESS = "Policy > Change of Address"
DOCUMENTS = "Policy > Documents Request"
COMPLAINT = "Complaint"

#: The label names the sample mail is written for, hierarchy levels separated by ``" > "``.
INTENTS: tuple[str, ...] = (
    REFUND,
    PAYMENT_FAILED,
    NEW_CLAIM,
    CLAIM_STATUS,
    CANCELLATION,
    CHANGE_OF_ADDRESS,
    DOCUMENTS,
    COMPLAINT,
)

# Relative frequency of each intent among messages that have one: billing and claims are busiest.
_INTENT_WEIGHTS: dict[str, int] = {
    REFUND: 16,
    PAYMENT_FAILED: 14,
    NEW_CLAIM: 15,
    CLAIM_STATUS: 15,
    CANCELLATION: 11,
    CHANGE_OF_ADDRESS: 10,
    DOCUMENTS: 8,
    COMPLAINT: 11,
}

_NO_INTENT = "thanks", "out_of_office"


@dataclass(frozen=True)
class _Templates:
    """The parts an email for one intent is assembled from; each a ``str.format`` template."""

    subjects: tuple[str, ...]
    requests: tuple[str, ...]
    details: tuple[str, ...]
    closings: tuple[str, ...]


_TEMPLATES: dict[str, _Templates] = {
    REFUND: _Templates(
        subjects=(
            "Refund request",
            "Refund for overpayment on {policy}",
            "Where is my refund?",
            "Refund of {amount}",
            "Overcharged - please refund",
            "Money owed back to me",
            "Duplicate payment {policy}",
        ),
        requests=(
            "I was charged {amount} twice for my premium on {date} and would like the duplicate refunded.",
            "After my policy {policy} was amended your letter said I was due a refund of {amount}, "
            "but nothing has arrived yet.",
            "I overpaid my monthly premium by {amount} and would like the difference paid back to me.",
            "Could you please refund the {amount} that was taken on {date}, as it should never have been collected.",
            "My online account shows a credit of {amount} on {policy} and I would like it returned to me "
            "rather than kept on the account.",
            "You took {amount} from my account on {date} even though I had already paid by card.",
            "I was promised a refund of {amount} when I reduced my cover, but it has not been paid.",
        ),
        details=(
            "The payment came out of my account ending {card}.",
            "I have attached a copy of my bank statement showing the payments.",
            "The refund should go back to the same card, ending {card}.",
            "I was told on the phone on {date} that it would take five working days.",
            "It has now been more than a month since I was told the money was on its way.",
            "My policy number is {policy}.",
        ),
        closings=(
            "Please let me know when I can expect the money back.",
            "Could you confirm the refund has been processed?",
            "I would appreciate a quick answer as money is tight this month.",
            "Please send me confirmation once the refund has been issued.",
        ),
    ),
    PAYMENT_FAILED: _Templates(
        subjects=(
            "Payment failed",
            "Direct Debit bounced",
            "Problem paying my premium",
            "Card declined on {policy}",
            "Missed payment letter",
            "Unable to pay online",
            "Failed instalment - {policy}",
        ),
        requests=(
            "I received a letter saying my Direct Debit of {amount} on {date} was unsuccessful.",
            "I tried to pay my premium online this morning but the payment page keeps saying my card was declined.",
            "Your system says my payment of {amount} failed, but my bank says there is nothing wrong with the account.",
            "My monthly payment did not go through on {date} because I changed banks recently.",
            "I got a text saying my instalment had been missed and that my cover could be cancelled.",
            "The payment for policy {policy} was returned unpaid and I do not understand why.",
        ),
        details=(
            "The card ending {card} definitely has funds on it.",
            "I have set up a new Direct Debit mandate with my bank.",
            "I was charged a {fee} failed payment fee by my bank as well.",
            "My policy number is {policy}.",
            "This has never happened before in {tenure_words} with you.",
        ),
        closings=(
            "Can you please try taking the payment again?",
            "Please tell me how I can pay before my cover lapses.",
            "Could someone call me to sort this out?",
            "Please confirm my policy is still active.",
        ),
    ),
    NEW_CLAIM: _Templates(
        subjects=(
            "New claim - {incident}",
            "I need to make a claim",
            "Claim on policy {policy}",
            "Reporting an incident",
            "Making a claim for {incident}",
            "First notification of loss",
        ),
        requests=(
            "I need to make a claim under my policy {policy} for {incident} on {date}.",
            "On {date} we had {incident} and I would like to start a claim.",
            "I am writing to report {incident}, which happened on {date}.",
            "Please can you open a claim for me, as there was {incident} last week.",
            "I would like to claim for {incident} that happened over the weekend.",
        ),
        details=(
            "I estimate the damage at around {amount}.",
            "I have taken photos and can send them over.",
            "A contractor has quoted {amount} for the repairs.",
            "Thankfully nobody was hurt.",
            "My policy number is {policy}.",
            "I have kept the receipts for everything I have had to pay for so far.",
        ),
        closings=(
            "What do I need to send you to get this started?",
            "Please let me know the next steps.",
            "Can someone arrange for an assessor to visit?",
            "Please tell me whether I am covered for this.",
        ),
    ),
    CLAIM_STATUS: _Templates(
        subjects=(
            "Update on claim {claim}",
            "Claim {claim} - any news?",
            "Chasing my claim",
            "Status of my claim",
            "Claim progress {claim}",
        ),
        requests=(
            "Could you give me an update on claim {claim}, which I submitted on {date}?",
            "I am chasing my claim {claim}, as I have not heard anything for three weeks.",
            "The assessor visited on {date} but I have had no word about claim {claim} since.",
            "I would like to know where my claim {claim} for {incident} has got to.",
            "I was promised a call back about claim {claim} but nobody has been in touch.",
            "Can you tell me whether claim {claim} has been approved yet?",
        ),
        details=(
            "I sent the repair quote for {amount} as requested.",
            "The builder needs to know whether he can start work.",
            "Your online portal has said 'under review' for weeks.",
            "My policy number is {policy}.",
            "I have already sent all the photos and receipts you asked for.",
        ),
        closings=(
            "When can I expect a decision?",
            "Please let me know what is happening.",
            "Could the claim handler call me on my mobile?",
            "Please can you give me a realistic timescale.",
        ),
    ),
    CANCELLATION: _Templates(
        subjects=(
            "Cancel my policy",
            "Cancellation request - {policy}",
            "Please cancel",
            "I no longer need this cover",
            "Do not renew {policy}",
        ),
        requests=(
            "Please cancel my policy {policy} with effect from {future_date}.",
            "I have sold my car, so I no longer need policy {policy} and would like to cancel it.",
            "I have found a cheaper quote elsewhere and want to cancel my cover from {future_date}.",
            "Please do not auto-renew policy {policy}, as I would like it to end at the renewal date.",
            "I am moving abroad and need to cancel my home insurance.",
            "I would like to close my policy {policy} as I have taken out cover through my employer.",
        ),
        details=(
            "If any premium is owed back to me please refund it to the card ending {card}.",
            "Please confirm there is no cancellation fee.",
            "Please stop the Direct Debit as well.",
            "My policy number is {policy}.",
            "I have been with you for {tenure_words}, but the renewal price went up to {amount}.",
        ),
        closings=(
            "Please send written confirmation of the cancellation.",
            "Can you confirm this has been done?",
            "Thank you for your help over the years.",
            "Please let me know if you need anything else from me to close it.",
        ),
    ),
    CHANGE_OF_ADDRESS: _Templates(
        subjects=(
            "Change of address",
            "New address for {policy}",
            "I have moved house",
            "Update my details",
            "Address update",
        ),
        requests=(
            "I have moved house and need to update the address on policy {policy}.",
            "Please change my address to {new_address} from {future_date}.",
            "We moved on {date} and our new address is {new_address}.",
            "Could you update my correspondence address, as post is still going to {old_address}?",
            "Please note my new address is {new_address}.",
        ),
        details=(
            "The old address was {old_address}.",
            "Will this change my premium?",
            "My policy number is {policy}.",
            "The car is now kept on a driveway instead of on the street.",
            "My phone number and email address have not changed.",
        ),
        closings=(
            "Please confirm once my details have been updated.",
            "Let me know if you need proof of address.",
            "Please send the updated documents to the new address.",
            "Thanks in advance for sorting this out.",
        ),
    ),
    DOCUMENTS: _Templates(
        subjects=(
            "Copy of my documents",
            "Certificate of insurance needed",
            "Policy documents {policy}",
            "Proof of cover request",
            "Request for policy schedule",
        ),
        requests=(
            "Could you please send me a copy of my certificate of insurance for policy {policy}?",
            "I need proof of cover for my mortgage lender by {future_date}.",
            "I cannot find my policy schedule and would like another copy.",
            "Please can you email me the policy wording and schedule for {policy}.",
            "My letting agent has asked for a copy of my home insurance documents.",
        ),
        details=(
            "The documents I was sent still show my old address.",
            "An electronic copy by email is fine.",
            "My policy number is {policy}.",
            "I could not download them from the online portal.",
            "It needs to show the cover start date and the premium of {amount}.",
        ),
        closings=(
            "Thanks for your help.",
            "Please send them as soon as you can.",
            "Let me know if you need anything from me first.",
            "I would be grateful for a quick turnaround.",
        ),
    ),
    COMPLAINT: _Templates(
        subjects=(
            "Complaint",
            "Formal complaint",
            "Very unhappy with your service",
            "Complaint about claim {claim}",
            "Poor service",
            "Not good enough",
            "Complaint - policy {policy}",
        ),
        requests=(
            "I want to make a formal complaint about the way I have been treated.",
            "This is the third time I have had to write about the same problem and I am extremely unhappy.",
            "I was on hold for over an hour on {date} and then the call was cut off.",
            "Your staff promised me a refund of {amount} weeks ago and I still have nothing.",
            "The handling of my claim {claim} has been a disgrace from start to finish.",
            "I was charged {amount} without any explanation and nobody can tell me why.",
            "Your renewal price went up by {amount} with no warning, which I think is unacceptable.",
        ),
        details=(
            "I have been a customer for {tenure_words} and have never been treated like this.",
            "My policy number is {policy}.",
            "I expect a written response within eight weeks.",
            "If this is not resolved I will take it to the Financial Ombudsman.",
            "Nobody has returned any of my calls.",
        ),
        closings=(
            "I expect an apology and an explanation.",
            "Please escalate this to a manager.",
            "I want this sorted out immediately.",
            "I am seriously considering moving my policies elsewhere.",
        ),
    ),
}

_OPENINGS = (
    "I hope you are well.",
    "I am writing about my policy {policy}.",
    "I am a customer with policy number {policy}.",
    "I hope someone can help me with this.",
    "Sorry to bother you.",
    "I tried calling but could not get through.",
    "My {relative} suggested I email rather than call.",
)

_FOLLOW_UPS = (
    "I am following up on my email below, as I have not had a reply.",
    "Further to my previous email, is there any update?",
    "Sorry to chase, but I still have not heard back.",
    "Just following up on this.",
    "I sent the email below on {date} and nobody has answered.",
)

_THANKS_SUBJECTS = (
    "Thank you",
    "Thanks!",
    "Re: Your recent enquiry",
    "Re: Your claim {claim}",
    "Thanks again",
)
_THANKS_SENTENCES = (
    "Just a quick note to say thank you for your help today.",
    "{agent} was really helpful on the phone and sorted everything out.",
    "Thanks very much, that is all I needed.",
    "Much appreciated.",
    "No further action is needed on my part.",
    "I have received the letter, thank you.",
)

_OOO_SUBJECTS = (
    "Automatic reply: Your Northwind Mutual renewal",
    "Automatic reply: Your policy documents",
    "Out of office",
    "Out of Office: Your recent enquiry",
)
_OOO_SENTENCES = (
    "I am out of the office until {future_date} with limited access to email.",
    "I am currently on annual leave and will be back on {future_date}.",
    "I will respond to your message when I return.",
    "For urgent matters please contact {colleague}.",
    "Your email has not been forwarded.",
)

_GREETINGS = (
    "Hello,",
    "Hi,",
    "Dear Sir or Madam,",
    "Good morning,",
    "Hi there,",
    "To whom it may concern,",
    "Hello Northwind team,",
    "Dear Northwind Mutual,",
)
_SIGN_OFFS = (
    "Kind regards,\n{first} {last}",
    "Thanks,\n{first}",
    "Many thanks,\n{first} {last}",
    "Regards,\n{initial}. {last}",
    "Best wishes,\n{first}",
    "Yours faithfully,\n{first} {last}",
    "Cheers,\n{first}",
)

_FIRST_NAMES = (
    "Jane", "Tom", "Priya", "Oliver", "Amelia", "Mohammed", "Grace", "Liam", "Chloe", "Daniel",
    "Fatima", "George", "Hannah", "Isaac", "Jessica", "Kwame", "Laura", "Matthew", "Niamh", "Owen",
    "Rebecca", "Samuel", "Sophie", "Thomas", "Yusuf", "Zara", "Aisha", "Ben", "Catherine", "Dylan",
    "Eleanor", "Finley", "Gemma", "Harry", "Imran", "Joanne", "Keith", "Lucy", "Margaret", "Nathan",
)  # fmt: skip
_LAST_NAMES = (
    "Doe", "Smith", "Patel", "Jones", "Williams", "Brown", "Taylor", "Davies", "Evans", "Wilson",
    "Thomas", "Roberts", "Khan", "Walker", "Wright", "Robinson", "Thompson", "White", "Hughes", "Edwards",
    "Green", "Hall", "Wood", "Harris", "Lewis", "Martin", "Jackson", "Clarke", "Clark", "Turner",
    "Hill", "Scott", "Cooper", "Morris", "Ward", "Moore", "King", "Watson", "Baker", "O'Brien",
)  # fmt: skip
_MAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")
_REGIONS = ("London", "South East", "North West", "Midlands", "Scotland", "Wales")
_STREETS = (
    "Mill Lane", "Church Street", "Station Road", "Victoria Road", "Park Avenue", "The Green",
    "Kings Road", "Orchard Close", "High Street", "Meadow View", "Queens Drive", "Elm Grove",
)  # fmt: skip
_TOWNS = ("Ashford", "Bramley", "Carlton", "Denholme", "Eastwick", "Fairford", "Greenhill", "Holbrook")
_INCIDENTS = (
    "a water leak in the kitchen",
    "storm damage to the roof",
    "a stolen bicycle",
    "a car accident on the ring road",
    "a burst pipe in the bathroom",
    "a laptop that was dropped and cracked",
    "a fence blown down in the wind",
    "a break-in at the house",
    "a flooded garage",
    "a dent from a reversing van",
)
_RELATIVES = ("mother", "father", "husband", "wife", "partner", "son", "daughter")
_AGENTS = ("Priya", "Tom on the claims team", "Sarah", "the lady I spoke to", "Marcus", "your colleague Jo")


@dataclass(frozen=True)
class SampleMessage:
    """One generated comment and the intent it was written for.

    Attributes:
      comment: a Communications Mining comment dict that ``normalise_comment`` accepts.
      label: the intent label name it was written for, ``None`` for mail with no intent.
    """

    comment: dict[str, Any]
    label: str | None


@dataclass
class _Thread:
    """What stays the same across a thread: the customer, the references and the subject."""

    thread_id: str
    label: str
    subject: str
    context: dict[str, Any]
    properties: dict[str, Any]


def _format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _format_date(moment: datetime) -> str:
    return f"{moment.day} {moment:%B}"


def _amount(rng: random.Random, low: int, high: int) -> str:
    return f"£{rng.randint(low, high)}.{rng.randint(0, 99):02d}"


def _address(rng: random.Random) -> str:
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    postcode = f"NW{rng.randint(1, 29)} {rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}"
    return f"{rng.randint(1, 180)} {rng.choice(_STREETS)}, {rng.choice(_TOWNS)} {postcode}"


def _tenure_words(years: int) -> str:
    if years == 0:
        return "less than a year"
    if years == 1:
        return "a year"
    return f"{years} years"


def _customer(rng: random.Random, moment: datetime) -> tuple[dict[str, Any], dict[str, Any]]:
    """A fresh customer: the template context and the comment's user properties."""
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    local_first, local_last = first.lower(), last.lower().replace("'", "")
    style = rng.randrange(4)
    if style == 0:
        local = f"{local_first}.{local_last}"
    elif style == 1:
        local = f"{local_first[0]}.{local_last}"
    elif style == 2:
        local = f"{local_first}{local_last}{rng.randint(1, 99)}"
    else:
        local = f"{local_first}_{local_last}"
    tenure = rng.randint(0, 25)
    context = {
        "first": first,
        "last": last,
        "initial": first[0],
        "email": f"{local}@{rng.choice(_MAIL_DOMAINS)}",
        "policy": f"POL-{rng.randint(100000, 999999)}",
        "claim": f"CLM-{rng.randint(100000, 999999)}",
        "amount": _amount(rng, 12, 1800),
        "fee": _amount(rng, 5, 35),
        "card": f"{rng.randint(0, 9999):04d}",
        "date": _format_date(moment - timedelta(days=rng.randint(1, 40))),
        "future_date": _format_date(moment + timedelta(days=rng.randint(3, 45))),
        "incident": rng.choice(_INCIDENTS),
        "old_address": _address(rng),
        "new_address": _address(rng),
        "relative": rng.choice(_RELATIVES),
        "agent": rng.choice(_AGENTS),
        "colleague": f"{rng.choice(('office', 'reception', 'admin', 'team'))}@{rng.choice(_MAIL_DOMAINS)}",
        "tenure_words": _tenure_words(tenure),
    }
    properties = {
        "string:Channel": "email",
        "string:Region": rng.choice(_REGIONS),
        "number:Customer Tenure Years": tenure,
    }
    return context, properties


def _pick(rng: random.Random, options: tuple[str, ...], count: int) -> list[str]:
    return rng.sample(options, min(count, len(options)))


def _intent_sentences(rng: random.Random, label: str, *, follow_up: bool) -> list[str]:
    """Two to six sentence templates for an intent: opening, request(s), details, closing."""
    parts = _TEMPLATES[label]
    sentences: list[str] = []
    if follow_up:
        sentences.append(rng.choice(_FOLLOW_UPS))
    elif rng.random() < 0.45:
        sentences.append(rng.choice(_OPENINGS))
    # Only a complaint runs through several grievances; other intents make one request.
    sentences += _pick(rng, parts.requests, 2 if label == COMPLAINT and rng.random() < 0.35 else 1)
    sentences += _pick(rng, parts.details, rng.choice((0, 1, 1, 2)))
    sentences.append(rng.choice(parts.closings))
    return sentences[:6]


def _no_intent_sentences(rng: random.Random, kind: str) -> tuple[str, list[str]]:
    if kind == "thanks":
        return rng.choice(_THANKS_SUBJECTS), _pick(rng, _THANKS_SENTENCES, rng.randint(2, 3))
    first, *rest = _pick(rng, _OOO_SENTENCES, rng.randint(2, 4))
    return rng.choice(_OOO_SUBJECTS), ["Thank you for your email.", first, *rest][:6]


def _body(rng: random.Random, sentences: list[str], context: dict[str, Any], *, automatic: bool) -> str:
    """Greeting, the sentences as one paragraph, and a sign-off (none on automatic replies)."""
    filled = [s.format(**context) for s in sentences]
    paragraph = " ".join(s[:1].upper() + s[1:] for s in filled)
    if automatic:
        return paragraph
    blocks = []
    if rng.random() < 0.85:
        blocks.append(rng.choice(_GREETINGS))
    blocks.append(paragraph)
    blocks.append(rng.choice(_SIGN_OFFS).format(**context))
    if rng.random() < 0.1:
        blocks.append("Sent from my phone")
    return "\n\n".join(blocks)


def _offsets(rng: random.Random, count: int) -> list[timedelta]:
    """``count`` sorted offsets over the spread, mostly in waking hours."""
    offsets = []
    for _ in range(count):
        hour = rng.choice(range(7, 23)) if rng.random() < 0.9 else rng.randrange(24)
        offsets.append(timedelta(days=rng.randrange(SPREAD_DAYS), hours=hour, minutes=rng.randrange(60)))
    offsets.sort()
    return offsets


def _comment(
    ident: str, moment: datetime, thread_id: str, subject: str, body: str, sender: str, props: dict[str, Any]
) -> dict[str, Any]:
    timestamp = _format_time(moment)
    return {
        "id": ident,
        "timestamp": timestamp,
        "thread_id": thread_id,
        "messages": [
            {
                "from": sender,
                "to": [MAILBOX],
                "subject": {"text": subject},
                "body": {"text": body},
                "sent_at": timestamp,
                "language": "en",
            }
        ],
        "user_properties": dict(props),
    }


def generate(count: int, *, seed: int = 0, start: datetime | None = None) -> list[SampleMessage]:
    """Generate ``count`` sample customer emails, the same ones every time for a given seed.

    Args:
      count: how many messages, 0 or more.
      seed: seeds the one ``random.Random`` everything is drawn from.
      start: the earliest timestamp (default 2026-01-05T08:00Z; a naive time is taken as UTC).
        Timestamps spread over about 90 days from it and never decrease with the id.

    Returns:
      Messages with ids ``demo-000001``, ``demo-000002``, ...; about 8% have no intent (label
      ``None``) and about 10% reply in an earlier thread (same ``thread_id``, subject ``Re: ...``,
      same customer and label).

    Raises:
      ValueError: if ``count`` is negative.
    """
    if count < 0:
        raise ValueError(f"count must be 0 or more, got {count}")
    if start is None:
        start = DEFAULT_START
    elif start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    rng = random.Random(seed)
    labels = list(_INTENT_WEIGHTS)
    weights = list(_INTENT_WEIGHTS.values())
    threads: list[_Thread] = []
    out: list[SampleMessage] = []
    for index, offset in enumerate(_offsets(rng, count)):
        ident = f"demo-{index + 1:06d}"
        moment = start + offset
        if threads and rng.random() < REPLY_SHARE:
            thread = rng.choice(threads[-40:])
            sentences = _intent_sentences(rng, thread.label, follow_up=True)
            body = _body(rng, sentences, thread.context, automatic=False)
            comment = _comment(
                ident,
                moment,
                thread.thread_id,
                f"Re: {thread.subject}",
                body,
                thread.context["email"],
                thread.properties,
            )
            out.append(SampleMessage(comment, thread.label))
            continue
        context, properties = _customer(rng, moment)
        thread_id = f"demo-thread-{index + 1:06d}"
        if rng.random() < NO_INTENT_SHARE:
            kind = rng.choice(_NO_INTENT)
            subject, sentences = _no_intent_sentences(rng, kind)
            subject = subject.format(**context)
            body = _body(rng, sentences, context, automatic=kind == "out_of_office")
            comment = _comment(ident, moment, thread_id, subject, body, context["email"], properties)
            out.append(SampleMessage(comment, None))
            continue
        label = rng.choices(labels, weights)[0]
        subject = rng.choice(_TEMPLATES[label].subjects).format(**context)
        body = _body(rng, _intent_sentences(rng, label, follow_up=False), context, automatic=False)
        comment = _comment(ident, moment, thread_id, subject, body, context["email"], properties)
        threads.append(_Thread(thread_id, label, subject, context, properties))
        out.append(SampleMessage(comment, label))
    return out


def to_csv_rows(messages: list[SampleMessage]) -> list[dict[str, str]]:
    """Flat rows for a demo CSV: ``id, timestamp, subject, from, text, label`` (label blank if none)."""
    rows = []
    for sample in messages:
        message = sample.comment["messages"][0]
        rows.append(
            {
                "id": sample.comment["id"],
                "timestamp": sample.comment["timestamp"],
                "subject": message.get("subject", {}).get("text", ""),
                "from": message.get("from", ""),
                "text": message["body"]["text"],
                "label": sample.label or "",
            }
        )
    return rows
