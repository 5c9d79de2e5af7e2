"""Screenshots of the office pages for docs/screenshots/ (not a test: run it by hand).

    python -m tests.web.office_screenshots DEMO_DB OUT_DIR

DEMO_DB is the database ``sanlv demo --dir DIR`` leaves (``DIR/sanlv-demo.db``: a whole round on a synthetic
roster); a copy of it gets an admin, a second round caught mid-way (its calls written as the dialler would
have), a do-not-call entry and a recorded prompt. The app is served on loopback and Debian's chromium
(``/usr/bin/chromium``, driven by Playwright; no browser is downloaded) signs in and photographs each page at
1280 px wide.
"""

from __future__ import annotations

import io
import math
import random
import shutil
import struct
import sys
import tempfile
import threading
import wave
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from werkzeug.serving import make_server

from campaigns import accounts, clock, dnc
from campaigns.models import CallAttempt, CallDirection, CallStatus, RoundTarget, TargetState
from campaigns.questionnaire import builtin_questionnaire, prompts
from campaigns.recordings import save_recording
from campaigns.rounds import RoundOptions, change_round, create_round
from campaigns.runtime import Runtime
from campaigns.settings import Settings
from web.app import create_app

PASSWORD = "screenshot pass 2026"
CHROMIUM_ARGS = ["--no-sandbox", "--lang=zh-CN", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip


def tone(seconds: float = 2.0, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        frames = (int(8000 * math.sin(2 * math.pi * 440 * n / rate)) for n in range(int(seconds * rate)))
        writer.writeframes(b"".join(struct.pack("<h", f) for f in frames))
    return out.getvalue()


def seed(settings: Settings) -> int:
    """Add what the pages show beyond the demo's round; returns the running round's id."""
    runtime = Runtime(settings)
    rng = random.Random(7)
    now = clock.now()
    with runtime.sessions.begin() as session:
        accounts.create_user(session, "admin", "admin", PASSWORD)
        dnc.add(session, "13900001234", "居民来电要求不再调查")
        options = RoundOptions.from_cli(settings, name="2026年下半年三率调查", sample="village:60", seed=3, cps=2.0)
        running = create_round(session, options)
        change_round(session, running.id, "launch")
        running.created_at = now - timedelta(minutes=40)
        running.launched_at = now - timedelta(minutes=25)
        targets = session.scalars(select(RoundTarget).where(RoundTarget.round_id == running.id)).all()
        for index, target in enumerate(targets):
            share = rng.random()
            if share < 0.42:
                state, status = TargetState.COMPLETED, CallStatus.COMPLETED
            elif share < 0.47:
                state, status = TargetState.REFUSED, CallStatus.COMPLETED
            elif share < 0.50:
                state, status = TargetState.DIALING, CallStatus.RINGING
            elif share < 0.52:
                state, status = TargetState.IN_CALL, CallStatus.IN_PROGRESS
            elif share < 0.62:
                state, status = TargetState.PENDING, rng.choice([CallStatus.BUSY, CallStatus.NO_ANSWER])
            else:
                continue
            target.state = state
            target.attempts = 1
            placed = now - timedelta(seconds=(len(targets) - index) * 2)
            session.add(
                CallAttempt(
                    round_id=running.id, target_id=target.id, number=1, direction=CallDirection.OUTBOUND,
                    call_sid=f"CA{running.id:04d}{index:028d}", status=status, created_at=placed, placed_at=placed,
                    answered_at=placed + timedelta(seconds=8) if status in (CallStatus.COMPLETED, CallStatus.IN_PROGRESS) else None,
                    ended_at=placed + timedelta(seconds=95) if status.value in ("completed", "busy", "no-answer") else None,
                    duration_seconds=rng.randint(70, 140) if status is CallStatus.COMPLETED else None,
                )
            )  # fmt: skip
        running_id = running.id
    questionnaire = builtin_questionnaire()
    for prompt in prompts(questionnaire)[:3]:
        save_recording(settings.recordings_dir, questionnaire, prompt, tone())
    runtime.dispose()
    return running_id


def shoot(base: str, out: Path, running_id: int) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800}, locale="zh-CN")
        page.goto(f"{base}/login")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/")
        shots = [
            ("office-home.png", "/", False),
            ("roster.png", "/roster/households", False),
            ("round-new.png", "/rounds/new", False),
            ("round-progress.png", f"/rounds/{running_id}", True),  # the latest calls are below the fold
            ("report.png", "/rounds/1/report", False),
            ("questionnaire.png", "/questionnaires/default", False),
        ]
        if "--full" in sys.argv:  # every page whole, to look at (too large for docs/)
            shots = [(name.replace(".png", "-full.png"), path, True) for name, path, _ in shots]
        for name, path, full in shots:
            page.goto(base + path)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(out / name), full_page=full)
            print(out / name)
        browser.close()


def shoot_from_demo_copy(demo_db: str, out_dir: str, seed, shoot) -> None:
    """Copy a ``sanlv demo --dir`` database, ``seed(settings)`` it, serve the app on a free loopback port and
    ``shoot(base_url, out_dir, seeded)``; the copy goes at the end."""
    work = Path(tempfile.mkdtemp(prefix="sanlv-shots-"))
    database = work / "sanlv.db"
    shutil.copyfile(demo_db, database)
    (work / "recordings").mkdir()
    settings = replace(
        Settings(),
        database_url=f"sqlite:///{database}",
        secret_key="screenshots-secret-key-0123456789abcdef",
        recordings_dir=str(work / "recordings"),
        redis_url="redis://127.0.0.1:6379/14",
        namespace="sanlv-screenshots",
    )
    seeded = seed(settings)
    runtime = Runtime(settings)
    server = make_server("127.0.0.1", 0, create_app(runtime), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        shoot(f"http://127.0.0.1:{server.server_port}", out, seeded)
    finally:
        server.shutdown()
        runtime.dispose()
        shutil.rmtree(work, ignore_errors=True)


def main(demo_db: str, out_dir: str) -> None:
    shoot_from_demo_copy(demo_db, out_dir, seed, shoot)


if __name__ == "__main__":
    main(*sys.argv[1:3])
