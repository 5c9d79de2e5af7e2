"""``sanlv demo``: a whole survey round on the embedded default, end to end, with real parts.

A fresh SQLite file; a synthetic township roster written as a GBK CSV (what Excel on a Chinese PC writes)
and imported through the real importer; the real Flask app served over HTTP on loopback; real RQ worker
processes placing calls through the simulated phone network; then the village rates table.

Redis: the one at REDIS_URL when it answers, otherwise an in-process stand-in (fakeredis, from the ``demo``
extra), with the RQ workers as threads of this process.

``--serve``: once the round has finished, the web app and the workers keep running until Ctrl-C, with three
demo users made in the demo's own database (an admin, a supervisor, and a cadre with follow-ups to visit);
their passwords are new random ones each run, printed once, and exist nowhere but in that database.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import click
import redis
from rq import Queue
from rq.scheduler import RQScheduler
from rq.timeouts import TimerDeathPenalty
from sqlalchemy import func, select

from campaigns import accounts, audit
from campaigns.db import session_scope
from campaigns.errors import SanlvError
from campaigns.migrate import upgrade
from campaigns.models import Cadre, FollowUp, FollowUpStatus, NoticeChannel
from campaigns.notices import NoticeOptions, change_notice, create_notice, notice_status_report, segment_count
from campaigns.roster import import_roster
from campaigns.rounds import (
    RoundOptions,
    change_round,
    create_round,
    round_status_report,
)
from campaigns.runtime import Runtime, set_runtime
from campaigns.schedule import parse_retry
from campaigns.settings import Settings, SettingsError, load_settings
from reports.format import render_rates_table
from reports.rates import village_rates
from workers.lifecycle import after_round_change
from workers.messaging import after_notice_change
from workers.queues import QUEUES, clear_namespace, queue_name, set_redis_connection
from workers.runner import InProcessWorker

VILLAGES = [
    "东山村",
    "西溪村",
    "南坪村",
    "北岭村",
    "上洋村",
    "下坂村",
    "溪口村",
    "桥头村",
    "后垄村",
    "新厝村",
    "林洋村",
    "湖边村",
    "石门村",
    "龙井村",
    "竹溪村",
    "梅坑村",
]
SURNAMES = "陈林黄张李王吴刘蔡杨郑许谢洪郭邱曾廖赖徐周叶苏庄吕江何罗高潘"
MOBILE_PREFIXES = (
    "134",
    "135",
    "136",
    "137",
    "138",
    "139",
    "150",
    "151",
    "152",
    "157",
    "158",
    "159",
    "182",
    "187",
    "188",
)
GIVEN = "国华建明志强秀英丽金水春福玉兰德荣海清文平木火土永"


class DemoError(SanlvError, RuntimeError):
    """The demo could not run (a port, Redis, or a worker failed); the message says what."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_roster(path: Path, households: int, villages: int, seed: int) -> None:
    """A synthetic roster: GBK CSV, Chinese headers, mobiles and a few landlines, 2-3 cadres per village."""
    rng = random.Random(seed)
    names = [VILLAGES[i] if i < len(VILLAGES) else f"第{i + 1}村" for i in range(villages)]
    used: set[str] = set()
    with path.open("w", encoding="gbk", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["村", "户主", "电话", "包户干部", "干部电话"])
        cadres = {
            village: [
                (rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN), f"139{rng.randrange(10**8):08d}")
                for _ in range(rng.choice((2, 3)))
            ]
            for village in names
        }
        for index in range(households):
            village = names[index % villages]
            while True:
                if rng.random() < 0.08:
                    phone = f"0593-{rng.choice('2345678')}{rng.randrange(10**6):06d}"
                else:
                    phone = f"{rng.choice(MOBILE_PREFIXES)}{rng.randrange(10**8):08d}"
                if phone not in used:
                    used.add(phone)
                    break
            cadre, cadre_phone = rng.choice(cadres[village])
            head = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
            writer.writerow([village, head, phone, cadre, cadre_phone])


def _inprocess_redis(redis_url: str) -> Callable[[], redis.Redis]:
    """A new in-process Redis stand-in: returns a function that opens a connection to it.

    fakeredis is imported here, only when no Redis answers: it comes with the ``demo`` extra, which a
    production install leaves out.
    """
    try:
        import fakeredis
    except ImportError:
        raise DemoError(
            f"{redis_url} 上没有 Redis 应答,而进程内替身 fakeredis 未安装:请安装 sanlv[demo](pip install "
            f"'sanlv[demo]')或启动 Redis / no Redis answered at {redis_url} and its in-process stand-in, "
            "fakeredis, is not installed: install sanlv[demo] (pip install 'sanlv[demo]') or start Redis"
        ) from None
    server = fakeredis.FakeServer()
    return functools.partial(fakeredis.FakeRedis, server=server)


def _real_redis(settings: Settings) -> bool:
    try:
        conn = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1, socket_timeout=2)
        conn.ping()
        conn.close()
        return True
    except (redis.ConnectionError, redis.TimeoutError, ValueError):
        return False


class _ThreadWorker(InProcessWorker):
    """An RQ worker that runs jobs in its own thread (the in-process stand-in cannot be reached by processes)."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:  # only the main thread may install signal handlers
        pass


def _start_inprocess_workers(
    settings: Settings, connect: Callable[[], redis.Redis], count: int
) -> list[threading.Thread]:
    """``count`` RQ workers and an RQ scheduler as threads of this process, on the Redis ``connect`` opens."""
    names = [queue_name(settings, name) for name in QUEUES]
    threads = []
    for index in range(count):
        conn = connect()
        worker = _ThreadWorker([Queue(name, connection=conn) for name in names], connection=conn, name=f"demo-{index}")
        thread = threading.Thread(
            target=worker.work, kwargs={"logging_level": "WARNING"}, name=f"rq-worker-{index}", daemon=True
        )
        thread.start()
        threads.append(thread)

    def schedule() -> None:
        scheduler = RQScheduler(names, connection=connect())
        while True:
            scheduler.acquire_locks()
            scheduler.enqueue_scheduled_jobs()
            time.sleep(0.2)

    thread = threading.Thread(target=schedule, name="rq-scheduler", daemon=True)
    thread.start()
    threads.append(thread)
    return threads


def _wait_until(probe, proc: subprocess.Popen, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe()
            return
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None:
                raise DemoError(f"{what} exited (code {proc.returncode})") from None
            if time.monotonic() > deadline:
                raise DemoError(f"{what} did not start within {timeout:.0f}s") from None
            time.sleep(0.1)


def _start_web(env: dict[str, str], port: int, log_file) -> subprocess.Popen:
    """The real app under gunicorn (``sanlv web``), as in production."""
    web = subprocess.Popen(
        [sys.executable, "-m", "web", "web", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    _wait_until(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close(), web, "the web app"
    )
    return web


def _progress_line(report: dict, elapsed: float, total: int) -> str:
    t = report["targets"]
    done = sum(t[s] for s in ("completed", "refused", "ineligible", "opted_out", "unreachable", "invalid", "cancelled"))
    return (
        f"[{elapsed:5.1f}s] 结束 {done}/{total} · 完成访问 {t['completed']} · 通话中 {t['in_call']} · "
        f"拨号中 {t['dialing']} · 待拨 {t['pending']} · 已拨 {report['attempts']} 通"
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# With ``--notice``: an SMS notice to the roster with half held out, before the round; residents who got it
# know of the work with this probability (SANLV_SIM_NOTICE_AWARENESS), so the lift shows in the round.
DEMO_NOTICE_TEXT = "【平安建设】县综治办提醒：平安建设人人参与，遇到矛盾纠纷可找村调解委员会，紧急情况请拨110。"
DEMO_NOTICE_AWARENESS = 0.99
DEMO_NOTICE_HOLDOUT = 0.5


def after_notice_round(runtime: Runtime, round_id: int, notice_id: int) -> None:
    """What the demo prints after a round that followed a notice: the notice's delivery, and where the
    comparison of notified and held-out households lives.

    The hook for the lift table (``sanlv report lift ROUND --notice NOTICE``): replace the last line with its
    rendering once reports has it.
    """
    with runtime.sessions() as session:
        report = notice_status_report(session, notice_id)
    click.echo("")
    click.echo(
        f"sanlv demo: 通知 {notice_id}: 发送 {report['households'] - report['held_out']} 户 · "
        f"留出 {report['held_out']} 户 · 送达 {report['delivered']} 户 · "
        f"退订 {report['targets']['opted_out']} 户"
    )
    click.echo(f"sanlv demo: 对比: sanlv report lift {round_id} --notice {notice_id}")


DEMO_ACTOR = "sanlv demo"


def make_demo_users(runtime: Runtime, round_id: int) -> list[tuple[str, str, str]]:
    """An admin, a supervisor, and a cadre user for the cadre with the most open follow-ups of the round.

    Returns (role label, username, password) for each; the passwords are new random ones.
    """
    logins = []
    with session_scope(runtime.sessions) as session:
        cadre_id = session.scalar(
            select(FollowUp.cadre_id)
            .where(FollowUp.round_id == round_id, FollowUp.cadre_id.is_not(None),
                   FollowUp.status == FollowUpStatus.PENDING)
            .group_by(FollowUp.cadre_id)
            .order_by(func.count().desc(), FollowUp.cadre_id)
            .limit(1)
        ) or session.scalar(select(Cadre.id).order_by(Cadre.id).limit(1))  # fmt: skip
        for role, username, label in (
            ("admin", "demo-admin", "管理员 admin"),
            ("supervisor", "demo-jiwei", "督查组 supervisor"),
            ("cadre", "demo-cadre", "包户干部 cadre"),
        ):
            password = secrets.token_urlsafe(9)
            user = accounts.create_user(
                session, username, role, password, cadre_id=cadre_id if role == "cadre" else None
            )
            audit.record(session, DEMO_ACTOR, audit.USER_ADD, object_type="user", object_id=user.id,
                         detail={"username": username, "role": role})  # fmt: skip
            if role == "cadre":
                cadre = session.get(Cadre, cadre_id)
                label = f"{label}（{cadre.name}）" if cadre else label
            logins.append((label, username, password))
    return logins


class _Stopped(Exception):
    """SIGTERM while serving: leave as Ctrl-C does."""


def _serve_until_stopped(processes: list[subprocess.Popen], log_path: Path) -> None:
    def stop(_signum, _frame):
        raise _Stopped

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(1.0)
            dead = [p for p in processes if p.poll() is not None]
            if dead:
                raise DemoError(f"a demo process exited (code {dead[0].returncode}); see {log_path}")
    except (KeyboardInterrupt, _Stopped):
        click.echo("\nsanlv demo: 已停止 / stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(
    *,
    households: int,
    villages: int,
    worker_count: int,
    directory: str | None,
    seed: int,
    timeout: int,
    notice: bool = False,
    serve: bool = False,
    port: int | None = None,
) -> int:
    try:
        base = load_settings()
    except SettingsError as exc:
        raise DemoError(f"configuration: {exc}") from None
    workdir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="sanlv-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "sanlv-demo.db"
    for leftover in workdir.glob("sanlv-demo.db*"):
        leftover.unlink()
    with contextlib.ExitStack() as stack:
        connect_inprocess: Callable[[], redis.Redis] | None = None
        if _real_redis(base):
            redis_url, redis_note = base.redis_url, f"Redis at {base.redis_url}"
        else:
            connect_inprocess = _inprocess_redis(base.redis_url)
            redis_url = "redis://fakeredis.invalid:6379/0"  # never dialled: the connection is registered below
            set_redis_connection(redis_url, connect_inprocess())
            redis_note = (
                f"no Redis answered at {base.redis_url}: using an in-process stand-in (fakeredis), "
                "with the RQ workers as threads of this process"
            )
        port = port or _free_port()
        settings = replace(
            base,
            database_url=f"sqlite:///{db_path}",
            redis_url=redis_url,
            telephony="simulator",
            twilio_account_sid=None,
            twilio_auth_token=None,
            twilio_api_base_url=None,
            public_base_url=f"http://127.0.0.1:{port}",
            secret_key=secrets.token_urlsafe(32),  # the demo's own: its sessions end with it
            namespace=f"sanlv-demo-{secrets.token_hex(4)}",
        )
        click.echo(f"sanlv demo: 数据库 {db_path}")
        click.echo(f"sanlv demo: {redis_note}")
        upgrade(settings.database_url)
        runtime = Runtime(settings)
        set_runtime(runtime)
        stack.callback(set_runtime, None)

        roster = workdir / "roster-gbk.csv"
        write_roster(roster, households, villages, seed)
        with session_scope(runtime.sessions) as session:
            result = import_roster(session, roster)
        click.echo(f"sanlv demo: 名单 {roster.name}: {result.summary()}")

        options = RoundOptions(
            name="演示:平安建设三率调查",
            windows=[["00:00", "24:00"]],  # the demo runs whatever the hour; real rounds use the default windows
            max_attempts=3,
            cps=20.0,
            max_concurrent=40,
            retry=parse_retry("busy=2s,no-answer=3s,failed=3s,machine=3s,dropped=2s"),
            seed=seed,
        )
        notice_id = None
        if notice:
            with session_scope(runtime.sessions) as session:
                notice_id = create_notice(
                    session,
                    NoticeOptions(name="演示:平安建设宣传短信", channel=NoticeChannel.SMS, text=DEMO_NOTICE_TEXT,
                                  holdout=DEMO_NOTICE_HOLDOUT, seed=seed, windows=[["00:00", "24:00"]], cps=50.0),
                ).id  # fmt: skip
                change_notice(session, notice_id, "launch")
                click.echo(f"sanlv demo: 通知 {notice_id}: {segment_count(DEMO_NOTICE_TEXT + '回复TD退订').describe()}")

        env = {
            **os.environ,
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "SANLV_TELEPHONY": "simulator",
            "PUBLIC_BASE_URL": settings.public_base_url or "",
            "SECRET_KEY": settings.secret_key or "",
            "SANLV_NAMESPACE": settings.namespace,
            "SANLV_SIM_SEED": str(seed),
        }
        if notice:
            env["SANLV_SIM_NOTICE_AWARENESS"] = str(DEMO_NOTICE_AWARENESS)
            os.environ["SANLV_SIM_NOTICE_AWARENESS"] = str(DEMO_NOTICE_AWARENESS)
        for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_API_BASE_URL"):
            env.pop(name, None)
        log_path = workdir / "processes.log"
        log_file = stack.enter_context(log_path.open("ab"))
        stack.callback(clear_namespace, settings)
        web = _start_web(env, port, log_file)
        stack.callback(_stop, web)
        workers: list[subprocess.Popen] = []
        if connect_inprocess is None:
            for _ in range(max(1, worker_count)):
                worker = subprocess.Popen(
                    [sys.executable, "-m", "web", "worker"], env=env, stdout=log_file, stderr=subprocess.STDOUT
                )
                stack.callback(_stop, worker)
                workers.append(worker)
            kind = f"{len(workers)} 个 RQ 工作进程"
        else:
            os.environ["SANLV_SIM_SEED"] = str(seed)
            _start_inprocess_workers(settings, connect_inprocess, max(1, worker_count))
            kind = f"{max(1, worker_count)} 个 RQ 工作线程"
        click.echo(f"sanlv demo: 网页服务 {settings.public_base_url} (gunicorn) · {kind} · 日志 {log_path}")

        if notice_id is not None:
            after_notice_change(settings, notice_id, "launch")
            _wait_for_notice(runtime, notice_id, [web, *workers], timeout, log_path)
        with session_scope(runtime.sessions) as session:
            round_id = create_round(session, options).id
            change_round(session, round_id, "launch")
        after_round_change(settings, round_id, "launch")
        started = time.monotonic()
        last_line = ""
        while True:
            time.sleep(1.0)
            with runtime.sessions() as session:
                report = round_status_report(session, round_id)
            line = _progress_line(report, time.monotonic() - started, sum(report["targets"].values()))
            if line != last_line:
                click.echo(line)
                last_line = line
            if report["status"] == "completed":
                break
            dead = [w for w in [web, *workers] if w.poll() is not None]
            if dead:
                raise DemoError(f"a demo process exited (code {dead[0].returncode}); see {log_path}")
            if time.monotonic() - started > timeout:
                raise DemoError(f"the round did not finish within {timeout}s; see {log_path}")
        elapsed = time.monotonic() - started

        click.echo(f"sanlv demo: 第 {round_id} 轮调查结束,用时 {elapsed:.1f} 秒。")
        click.echo("")
        with runtime.sessions() as session:
            click.echo(render_rates_table(village_rates(session, round_id)))
        if notice_id is not None:
            after_notice_round(runtime, round_id, notice_id)
        if serve:
            logins = make_demo_users(runtime, round_id)
            click.echo("")
            click.echo(f"sanlv demo: 网页 {settings.public_base_url}/login (按 Ctrl-C 停止 / Ctrl-C to stop)")
            click.echo(
                "sanlv demo: 演示账号(仅在本演示数据库中,每次运行重新生成)/ demo logins (this demo's database only):"
            )
            for label, username, password in logins:
                click.echo(f"  用户名 {username:<11} 密码 {password}   {label}")
            click.echo(f"sanlv demo: 数据库 {db_path} · 日志 {log_path}")
            _serve_until_stopped([web, *workers], log_path)
    runtime.dispose()
    return 0


def _wait_for_notice(runtime: Runtime, notice_id: int, processes: list, timeout: float, log_path: Path) -> None:
    """Until the notice is sent and the network has reported every text's delivery (or ``timeout``)."""
    started = time.monotonic()
    last = ""
    while True:
        time.sleep(1.0)
        with runtime.sessions() as session:
            report = notice_status_report(session, notice_id)
        sent = report["targets"]["sent"]
        reported = sum(report["provider_statuses"].get(s, 0) for s in ("delivered", "undelivered", "failed"))
        line = f"sanlv demo: 通知 {notice_id} {report['status']} · 已发 {sent} · 已回执 {reported}"
        if line != last:
            click.echo(line)
            last = line
        if report["status"] == "completed" and reported >= sent:
            return
        dead = [p for p in processes if p.poll() is not None]
        if dead:
            raise DemoError(f"a demo process exited (code {dead[0].returncode}); see {log_path}")
        if time.monotonic() - started > timeout:
            raise DemoError(f"the notice was not delivered within {timeout}s; see {log_path}")
