"""The simulated phone network's residents: who answers, and what they press at each question.

A :class:`Resident` decides, once per call, the call's outcome (``answer``, ``busy``, ``no-answer``,
``failed``, ``machine``, ``fax``) and then, for each ``<Gather>`` the IVR plays, what the resident does:
press keys, stay silent, or hang up. The IVR names the question in the Gather's action URL
(``...?attempt=12&step=security&try=1``); the resident reads ``step`` and ``try`` from there. A read-back
of an answer is asked at ``<step>.confirm`` (1 confirms, 2 re-chooses); residents confirm unless a script
says otherwise.

Two kinds of residents:

* :class:`ScriptedResident` follows a script a test stored in Redis under ``{namespace}:sim:script:{E164}``
  (see :func:`set_script` for the format; the namespace is ``SANLV_NAMESPACE``). A stored list is consumed
  one object per call (the calls the resident makes to our number included); the last one repeats.
* :class:`PopulationResident` draws its behaviour from a :class:`VillageProfile` derived deterministically
  from the village name, so villages differ visibly but a given seed always gives the same round. Opinions
  are seeded by (seed, phone): the same person answers the same way on every attempt, so a resumed
  interview stays consistent. Call-level behaviour (busy, silence, hanging up) is seeded by
  (seed, phone, attempt).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from campaigns.models import Household, NoticeTarget, Village
from campaigns.settings import Settings
from sim.store import BUSY, FAILED, NO_ANSWER, sim_key
from workers.queues import redis_connection

log = logging.getLogger("sanlv.simulator")

# Outcomes of a call that reaches the network (busy, no-answer and failed are also the call's final status).
# "machine" and "fax" answer the call but never press a key.
ANSWER = "answer"
MACHINE = "machine"
FAX = "fax"
CALL_OUTCOMES = (ANSWER, BUSY, NO_ANSWER, FAILED, MACHINE, FAX)

# Outcomes that make the create request itself fail (the call never exists), like Twilio's REST errors:
# 21211 invalid number, 21216 blocked destination, 20429 too many requests.
INVALID = "invalid"
BLOCKED = "blocked"
RATE_LIMITED = "rate-limited"
CREATE_ERRORS = (INVALID, BLOCKED, RATE_LIMITED)
OUTCOMES = CALL_OUTCOMES + CREATE_ERRORS

# What a scripted resident presses at a step the script does not mention: a cooperative, positive resident
# who declines the cadre visit. Any other step key gets UNKNOWN_STEP_KEY.
DEFAULT_ANSWERS: dict[str, str] = {
    "consent": "1",
    "screen": "1",
    "security": "1",
    "concern": "5",
    "awareness": "1",
    "participation": "1",
    "satisfaction": "1",
    "cadre_contact": "1",
    "visit": "2",
    "delivery": "1",
    # A voice notice (ivr.notices names its Gathers so): listen to the end, then let it hang up.
    "notice": "",
    "notice_hint": "",
}
UNKNOWN_STEP_KEY = "1"
NOTICE_STEPS = ("notice", "notice_hint")

SCRIPT_FIELDS = frozenset({"outcome", "answers", "presses", "hangup_at_step", "hangup_after_presses", "call_back"})
CONFIRM_SUFFIX = ".confirm"  # the IVR's read-back position of a step (campaigns.flow)
CONFIRM_KEY = "1"


def is_confirmation(step: str) -> bool:
    return step.endswith(CONFIRM_SUFFIX)


@dataclass(frozen=True)
class Press:
    """What a resident does at one ``<Gather>``: ``keys`` ("" is silence), or hang up."""

    keys: str = ""
    hangup: bool = False

    @property
    def silent(self) -> bool:
        return not self.hangup and self.keys == ""


SILENCE = Press("")
HANG_UP = Press(hangup=True)


class Resident:
    """The person (or machine) at the end of one call. Subclasses decide; the simulator only asks."""

    outcome: str = ANSWER
    # Seconds after hanging up mid-survey at which the resident calls our number back (None: never).
    call_back_after: float | None = None

    def respond(self, step: str, try_number: int | None) -> Press:
        """What to do at the Gather that asks ``step`` (``try_number`` as the IVR numbers it, if it does)."""
        raise NotImplementedError

    def meant(self, step: str) -> str | None:
        """The answer this resident means to give at ``step`` (None when the resident has no opinion)."""
        return None


# --------------------------------------------------------------------------------------------------- scripts


def validate_script(script: Any) -> dict[str, Any]:
    """Check one script object and return it as a plain dict.

    Raises:
        ValueError: naming the field that is wrong.
    """
    if not isinstance(script, Mapping):
        raise ValueError(f"a resident script must be an object, not {type(script).__name__}")
    unknown = set(script) - SCRIPT_FIELDS
    if unknown:
        raise ValueError(f"unknown script field(s): {', '.join(sorted(unknown))}")
    outcome = script.get("outcome", ANSWER)
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome={outcome!r} must be one of: {', '.join(OUTCOMES)}")
    answers = script.get("answers", {})
    if not isinstance(answers, Mapping):
        raise ValueError("answers must be an object mapping step keys to keys to press")
    for step, value in answers.items():
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) for v in values):
            raise ValueError(f"answers.{step} must be a string of keys or a non-empty list of them")
    presses = script.get("presses", [])
    if not isinstance(presses, list) or not all(isinstance(p, str) for p in presses):
        raise ValueError('presses must be a list of strings ("" is silence)')
    hangup_at = script.get("hangup_at_step")
    if hangup_at is not None and not isinstance(hangup_at, str):
        raise ValueError("hangup_at_step must be a step key")
    after = script.get("hangup_after_presses")
    if after is not None and (not isinstance(after, int) or isinstance(after, bool) or after < 0):
        raise ValueError("hangup_after_presses must be a whole number >= 0")
    call_back = script.get("call_back")
    if call_back is not None and not (
        isinstance(call_back, bool) or (isinstance(call_back, int | float) and 0 <= call_back < 86400)
    ):
        raise ValueError("call_back must be true, false or the seconds to wait before calling back")
    return dict(script)


def script_key(settings: Settings, phone: str) -> str:
    """Where the script for calls to ``phone`` is stored (in the deployment's namespace)."""
    return sim_key(settings, "script", phone)


def set_script(settings: Settings, phone: str, script: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
    """Store the script for calls to ``phone`` (in the namespace of ``settings``): one object for every call,
    or a list consumed one per call.

    Script object (every field optional)::

        {"outcome": "answer",          # answer | busy | no-answer | failed | machine | fax, or a create
                                       # error: invalid (21211) | blocked (21216) | rate-limited (20429)
         "answers": {"security": "3",  # what to press when that step is asked; a list gives successive
                     "awareness": ["7", "1"]},  # asks of the step (the last repeats); "" is silence
         "presses": ["1", "", "*"],    # explicit presses for successive Gathers, overriding "answers"
                                       # while it lasts ("" is silence)
         "hangup_at_step": "awareness",  # hang up when this step is asked ...
         "hangup_after_presses": 2,    # ... once this many Gathers were responded to (alone: at the
                                       # first Gather after that many)
         "call_back": true}            # having hung up mid-survey, call our number back (true: at once;
                                       # a number: after that many simulated seconds); the call-back
                                       # follows the next script object

    Steps not in ``answers`` get :data:`DEFAULT_ANSWERS`; unknown steps get "1". A read-back
    (``security.confirm``) is confirmed with "1" unless ``answers`` names it (``"security.confirm": "2"``
    re-chooses).

    Raises:
        ValueError: the script is malformed (nothing is stored).
    """
    if isinstance(script, Mapping):
        payload: Any = validate_script(script)
    else:
        if not script:
            raise ValueError("a script list must not be empty")
        payload = [validate_script(item) for item in script]
    redis_connection(settings).set(script_key(settings, phone), json.dumps(payload, ensure_ascii=False))


def clear_script(settings: Settings, phone: str) -> None:
    """Forget the script for ``phone``: its calls go back to the village population."""
    redis_connection(settings).delete(script_key(settings, phone))


def _script_head(raw: bytes | str | None) -> tuple[dict[str, Any] | None, Any]:
    """The next script object and what remains stored after it is consumed (None: leave the key as is)."""
    if raw is None:
        return None, None
    data = json.loads(raw)
    if isinstance(data, list):
        if not data:
            return None, None
        if len(data) == 1:
            return validate_script(data[0]), None  # the last one repeats
        return validate_script(data[0]), data[1:]
    return validate_script(data), None


def take_script(settings: Settings, phone: str, *, only_outcomes: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Consume the next script object for ``phone`` (atomically), or None if there is none.

    With ``only_outcomes``, the head is consumed only if its outcome is one of them (used by the provider to
    fail a create request without eating the script of the call that follows).
    """
    key = script_key(settings, phone)
    taken: dict[str, Any] | None = None

    def consume(pipe: Any) -> None:
        nonlocal taken
        head, rest = _script_head(pipe.get(key))
        if head is None or (only_outcomes is not None and head.get("outcome", ANSWER) not in only_outcomes):
            taken = None
            return
        taken = head
        if rest is not None:
            pipe.multi()
            pipe.set(key, json.dumps(rest, ensure_ascii=False))

    redis_connection(settings).transaction(consume, key)
    return taken


class ScriptedResident(Resident):
    """A resident that does exactly what a test's script says."""

    def __init__(self, script: Mapping[str, Any]):
        self.script = validate_script(script)
        self.outcome = self.script.get("outcome", ANSWER)
        self._answers: Mapping[str, str | list[str]] = self.script.get("answers", {})
        self._presses: list[str] = list(self.script.get("presses", []))
        self._hangup_at: str | None = self.script.get("hangup_at_step")
        self._hangup_after: int | None = self.script.get("hangup_after_presses")
        call_back = self.script.get("call_back")
        if call_back is True:
            self.call_back_after = 0.0
        elif call_back is not None and call_back is not False:
            self.call_back_after = float(call_back)
        self._responded = 0
        self._asked: dict[str, int] = {}

    def _should_hang_up(self, step: str) -> bool:
        if self._hangup_at is None and self._hangup_after is None:
            return False
        at_step = self._hangup_at is None or self._hangup_at == step
        after = self._hangup_after is None or self._responded >= self._hangup_after
        return at_step and after

    def meant(self, step: str) -> str | None:
        if is_confirmation(step):
            return None  # confirming is not an answer; what is meant shows at the question itself
        value = self._answers.get(step)
        if value is None:
            return DEFAULT_ANSWERS.get(step, UNKNOWN_STEP_KEY)
        final = value[-1] if isinstance(value, list) else value
        return final or None  # "" is a resident who means to stay silent

    def respond(self, step: str, try_number: int | None) -> Press:
        if self._should_hang_up(step):
            return HANG_UP
        asked = self._asked.get(step, 0)
        self._asked[step] = asked + 1
        self._responded += 1
        if self._presses:
            return Press(self._presses.pop(0))
        value = self._answers.get(step)
        if value is None:
            return Press(CONFIRM_KEY if is_confirmation(step) else DEFAULT_ANSWERS.get(step, UNKNOWN_STEP_KEY))
        if isinstance(value, list):
            return Press(value[min(asked, len(value) - 1)])
        return Press(value)


# ------------------------------------------------------------------------------------------------ population


def _lerp(low: float, high: float, u: float) -> float:
    return low + (high - low) * u


@dataclass(frozen=True)
class VillageProfile:
    """Probabilities that describe one village's residents. Derived from the name by :meth:`for_village`."""

    name: str | None
    # Call outcomes (the rest answer in person).
    busy: float = 0.08
    no_answer: float = 0.10
    failed: float = 0.01
    machine: float = 0.02
    fax: float = 0.002
    # Interview behaviour.
    refusal: float = 0.03  # consent: 2
    ineligible: float = 0.02  # screen: 2
    security_positive: float = 0.94  # 1 or 2
    satisfaction_positive: float = 0.90
    unsure: float = 0.02  # share of "0" (说不清 / 记不清) where the question has it
    awareness: float = 0.92
    participation: float = 0.60
    cadre_contact: float = 0.78
    visit_yes: float = 0.5  # when asked
    delivery: float = 0.75  # confirms that publicity material was delivered to the door
    # Keypad habits: on the first ask of a step, how often a resident is silent, presses * or a wrong key.
    silence: float = 0.03
    repeat: float = 0.02
    wrong_key: float = 0.01
    drop: float = 0.02  # hangs up somewhere in the middle of the interview
    opt_out: float = 0.01  # presses 9 somewhere in the interview

    @classmethod
    def for_village(cls, name: str | None) -> VillageProfile:
        """The profile of village ``name``: the same name always gives the same profile; None is generic."""
        if not name:
            return cls(name=None)
        digest = hashlib.sha256(name.encode("utf-8")).digest()
        u = [int.from_bytes(digest[i : i + 2], "big") / 0xFFFF for i in range(0, 32, 2)]
        return cls(
            name=name,
            busy=_lerp(0.06, 0.10, u[0]),
            no_answer=_lerp(0.07, 0.13, u[1]),
            failed=_lerp(0.005, 0.015, u[2]),
            machine=_lerp(0.01, 0.04, u[3]),
            refusal=_lerp(0.01, 0.05, u[4]),
            ineligible=_lerp(0.01, 0.03, u[5]),
            security_positive=_lerp(0.85, 0.995, u[6]),
            satisfaction_positive=_lerp(0.80, 0.99, u[7]),
            unsure=_lerp(0.005, 0.04, u[8]),
            awareness=_lerp(0.85, 0.99, u[9]),
            participation=_lerp(0.40, 0.80, u[10]),
            cadre_contact=_lerp(0.60, 0.95, u[11]),
            visit_yes=_lerp(0.35, 0.65, u[12]),
            delivery=_lerp(0.55, 0.90, u[13]),
        )

    def call_outcome(self, rng: random.Random) -> str:
        """Draw how the call ends up: answered in person, busy, no answer, failed, machine or fax."""
        draw = rng.random()
        for outcome, share in (
            (BUSY, self.busy),
            (NO_ANSWER, self.no_answer),
            (FAILED, self.failed),
            (MACHINE, self.machine),
            (FAX, self.fax),
        ):
            if draw < share:
                return outcome
            draw -= share
        return ANSWER

    def opinion(self, step: str, rng: random.Random) -> str:
        """Draw the resident's honest answer to ``step`` (the key they mean to press)."""
        r = rng.random()
        if step == "consent":
            return "2" if r < self.refusal else "1"
        if step == "screen":
            return "2" if r < self.ineligible else "1"
        if step in ("security", "satisfaction"):
            positive = self.security_positive if step == "security" else self.satisfaction_positive
            unsure = min(self.unsure, 1.0 - positive)
            if r < positive:
                return "1" if rng.random() < 0.6 else "2"
            if r < positive + unsure:
                return "0"
            return "3" if rng.random() < 0.7 else "4"
        if step == "concern":
            return rng.choices(["1", "2", "3", "4", "5"], weights=[3, 4, 1, 3, 1])[0]
        if step == "awareness":
            return "1" if r < self.awareness else "2"
        if step == "participation":
            return "1" if r < self.participation else "2"
        if step == "cadre_contact":
            if r < self.cadre_contact:
                return "1"
            return "0" if r < self.cadre_contact + self.unsure else "2"
        if step == "visit":
            return "1" if r < self.visit_yes else "2"
        if step == "delivery":
            if r < self.delivery:
                return "1"
            return "0" if r < self.delivery + self.unsure else "2"
        return UNKNOWN_STEP_KEY


class PopulationResident(Resident):
    """A resident of a village, behaving as the village profile says.

    Args:
        profile: the village's profile.
        phone: the number called (seeds the resident's opinions).
        attempt: the attempt id (seeds this call's outcome and keypad habits).
        seed: the simulation's seed; the same seed gives the same round.
    """

    def __init__(
        self,
        profile: VillageProfile,
        phone: str,
        attempt: int | str,
        seed: int | str = 0,
        *,
        notified_awareness: float | None = None,
    ):
        # A resident who got a notice (an SMS delivered, a voice notice answered) knows of the work with the
        # settable probability ``notified_awareness`` (SANLV_SIM_NOTICE_AWARENESS) instead of the village's:
        # the true effect of the notice, which the lift report must find.
        if notified_awareness is not None:
            profile = replace(profile, awareness=notified_awareness)
        self.profile = profile
        self.phone = phone
        self._seed = seed
        rng = random.Random(f"{seed}:{phone}:{attempt}:call")
        self.outcome = profile.call_outcome(rng)
        self._rng = rng
        # The n-th Gather (1-based) at which this resident hangs up or presses 9; 0 means never.
        self._drop_at = rng.randint(2, 12) if rng.random() < profile.drop else 0
        self._opt_out_at = rng.randint(1, 10) if rng.random() < profile.opt_out else 0
        self._gathers = 0
        self._asked: dict[str, int] = {}
        self._opinions: dict[str, str] = {}

    def meant(self, step: str) -> str | None:
        if is_confirmation(step):
            return None
        if step not in self._opinions:
            # One RNG per (phone, step): an opinion does not depend on the order questions are asked in.
            self._opinions[step] = self.profile.opinion(step, random.Random(f"{self._seed}:{self.phone}:{step}"))
        return self._opinions[step]

    def respond(self, step: str, try_number: int | None) -> Press:
        if step in NOTICE_STEPS:
            return self._notice_response(step)
        self._gathers += 1
        if self._gathers == self._drop_at:
            return HANG_UP
        if self._gathers == self._opt_out_at:
            return Press("9")
        asked = self._asked.get(step, 0)
        self._asked[step] = asked + 1
        answer = CONFIRM_KEY if is_confirmation(step) else self.meant(step) or UNKNOWN_STEP_KEY
        if asked == 0:
            r = self._rng.random()
            if r < self.profile.silence:
                return SILENCE
            r -= self.profile.silence
            if r < self.profile.repeat:
                return Press("*")
            r -= self.profile.repeat
            if r < self.profile.wrong_key:
                return Press("7" if answer != "7" else "8")
        return Press(answer)

    def _notice_response(self, step: str) -> Press:
        """A voice notice: most listen to the end; some hang up during it, ask to hear it again, or press 9."""
        asked = self._asked.get(step, 0)
        self._asked[step] = asked + 1
        r = self._rng.random()
        if step == "notice":
            return HANG_UP if asked == 0 and r < self.profile.drop * 5 else SILENCE
        if asked == 0 and r < self.profile.repeat * 5:
            return Press("*")
        if r > 1 - self.profile.opt_out:
            return Press("9")
        return SILENCE


def notice_awareness_from_environ() -> float | None:
    """``SANLV_SIM_NOTICE_AWARENESS``: the probability that a resident who got a notice answers 知道 (unset:
    a notice changes nothing)."""
    raw = (os.environ.get("SANLV_SIM_NOTICE_AWARENESS") or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"SANLV_SIM_NOTICE_AWARENESS={raw!r} is not a number") from None
    if not 0 <= value <= 1:
        raise ValueError(f"SANLV_SIM_NOTICE_AWARENESS={raw!r} must be a probability from 0 to 1")
    return value


def got_notice(sessions: sessionmaker[Session], phone: str) -> bool:
    """Whether the household at ``phone`` got a notice: an SMS delivered or a voice notice answered."""
    try:
        with sessions() as session:
            return (
                session.scalar(
                    select(NoticeTarget.id).where(NoticeTarget.phone == phone, NoticeTarget.delivered).limit(1)
                )
                is not None
            )
    except Exception:  # the simulator must keep ringing even when the roster is unreachable
        log.warning("event=notice_lookup_failed phone=%s", phone, exc_info=True)
        return False


def village_of(sessions: sessionmaker[Session], phone: str) -> str | None:
    """The name of the village of the household at ``phone``, or None (unknown number, or no database)."""
    try:
        with sessions() as session:
            return session.scalar(
                select(Village.name).join(Household, Household.village_id == Village.id).where(Household.phone == phone)
            )
    except Exception:  # the simulator must keep ringing even when the roster is unreachable
        log.warning("event=village_lookup_failed phone=%s", phone, exc_info=True)
        return None


def resident_for_call(
    settings: Settings,
    phone: str,
    attempt: int | str,
    *,
    sessions: sessionmaker[Session] | None = None,
    seed: int | str = 0,
) -> Resident:
    """The resident who picks up this call: the next scripted one if a test stored a script, else one drawn
    from the village population of the household (a generic village when the number is not in the roster).
    """
    script = take_script(settings, phone)
    if script is not None:
        return ScriptedResident(script)
    village = village_of(sessions, phone) if sessions is not None else None
    lifted = notice_awareness_from_environ()
    notified = lifted if lifted is not None and sessions is not None and got_notice(sessions, phone) else None
    return PopulationResident(VillageProfile.for_village(village), phone, attempt, seed, notified_awareness=notified)
