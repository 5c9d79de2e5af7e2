"""``sanlv`` commands of the domain core: db, roster, questionnaire, round, followup, user, audit.

Each command exits non-zero with a one-line reason on bad input: a :class:`campaigns.errors.SanlvError` raised
here is turned into that line by the console script (``web.cli``), in one place.

Commands that change what the audit log covers (roster imports, round changes, follow-up changes, user
changes, exports written to a file) record it with the actor ``cli:<os user>`` (:func:`cli_actor`), in the
same transaction as the change.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import click
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.exc import OperationalError, ProgrammingError

from campaigns import accounts, audit, callerids
from campaigns.db import session_scope
from campaigns.errors import SanlvError
from campaigns.followups import STATUS_LABELS, mark_followup, sync_all_rounds
from campaigns.migrate import alembic_config, current, upgrade
from campaigns.notices import (
    NOTICE_ACTIONS,
    NOTICE_CREATE,
    NoticeError,
    NoticeOptions,
    change_notice,
    create_notice,
    create_presurvey_notice,
    follow_round,
    notice_changed,
    notice_status_report,
    save_notice_recording,
    segment_count,
)
from campaigns.questionnaire import (
    QuestionnaireError,
    find_recording,
    load_questionnaire_file,
    prompts,
    recording_folder,
    resolve_questionnaire,
    to_show_json,
)
from campaigns.roster import RosterError, RosterLimits, import_roster
from campaigns.rounds import (
    RoundOptions,
    change_round,
    create_round,
    parse_local_time,
    round_changed,
    round_status_report,
)
from campaigns.runtime import Runtime, get_runtime
from campaigns.settings import load_settings


class SanlvGroup(click.Group):
    """A command group that turns SanlvErrors and database errors into one line on stderr and exit code 1.

    Every group of the ``sanlv`` script is one, so no command converts errors itself.
    """

    def invoke(self, ctx: click.Context):
        try:
            with database_errors():
                return super().invoke(ctx)
        except SanlvError as exc:
            raise click.ClickException(exc.summary()) from None


def runtime_or_exit() -> Runtime:
    """The process runtime; a bad setting is a SettingsError (a SanlvError), reported as one line."""
    return get_runtime()


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """A database that cannot be reached or has no schema yet is the operator's to fix: one line, no traceback."""
    try:
        yield
    except (OperationalError, ProgrammingError) as exc:
        detail = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
        first = detail[0] if detail else type(exc).__name__
        missing_table = "no such table" in first or ("relation " in first and "does not exist" in first)
        hint = " (has `sanlv db upgrade` been run?)" if missing_table else ""
        raise SanlvError(f"database: {first}{hint}") from None


def echo_json(data) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def cli_actor() -> str:
    """Who acts from the command line, as the audit log names them: ``cli:<os user>``."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        name = f"uid{os.getuid()}"
    return f"cli:{name}"


def audited_export(report: str) -> Callable:
    """Record a report command's export in the audit log once it has written its file (``--output``)."""

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(**options):
            result = command(**options)
            if options.get("output") is not None:
                rounds = [str(options[name]) for name in ("round_id", "round_a", "round_b") if name in options]
                detail = {"report": report, "format": options.get("fmt"), "output": str(options["output"])}
                if options.get("cadre_id") is not None:
                    detail["cadre"] = options["cadre_id"]  # one cadre's own list: full phone numbers
                with session_scope(runtime_or_exit().sessions) as session:
                    audit.record(
                        session, cli_actor(), audit.EXPORT, object_type="round", object_id=",".join(rounds),
                        detail=detail,
                    )
            return result

        return run

    return decorate


# --- db -------------------------------------------------------------------------------------------------


@click.group("db", cls=SanlvGroup)
def db_group() -> None:
    """Database schema (Alembic migrations)."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: head), then create the follow-up items of stored answers."""
    rt = runtime_or_exit()
    url = rt.settings.database_url
    try:
        upgrade(url, revision)
    except CommandError as exc:
        raise SanlvError(f"revision {revision}: {exc}") from None
    at = current(url)
    if at in ScriptDirectory.from_config(alembic_config(url)).get_heads():
        # The interview keeps follow-up items as it stores answers; answers stored before it did get theirs
        # here (idempotent: nothing to do the second time). Only at head, where the models match the schema.
        with session_scope(rt.sessions) as session:
            created = sync_all_rounds(session)
        if created:
            click.echo(f"已根据已存答案补建回访事项 {created} 条 / follow-ups: {created} created from stored answers")
    click.echo(f"database at revision {at}")


@db_group.command("current")
def db_current() -> None:
    """Print the database's current migration revision."""
    click.echo(current(runtime_or_exit().settings.database_url) or "(empty database)")


# --- roster ---------------------------------------------------------------------------------------------


@click.group("roster", cls=SanlvGroup)
def roster_group() -> None:
    """The township roster: villages, households' phone numbers, cadres."""


@roster_group.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check every row and report what would change; write nothing.")
@click.option("--skip-invalid", is_flag=True, help="Import the good rows and list the skipped ones.")
@click.option(
    "--replace", is_flag=True,
    help="FILE is the full roster: retire the households it does not list (never sampled again, history kept).",
)  # fmt: skip
def roster_import(file: Path, dry_run: bool, skip_invalid: bool, replace: bool) -> None:
    """Import FILE: CSV (UTF-8, UTF-8 with BOM, GBK) or XLSX, Chinese or English headers."""
    if replace and skip_invalid:
        raise SanlvError("--replace needs the full roster: it cannot be combined with --skip-invalid")
    rt = runtime_or_exit()
    try:
        with session_scope(rt.sessions) as session:
            result = import_roster(
                session, file, dry_run=dry_run, skip_invalid=skip_invalid, replace=replace,
                limits=RosterLimits.from_settings(rt.settings),
            )  # fmt: skip
            if dry_run:
                session.rollback()
            else:
                audit.record(session, cli_actor(), audit.ROSTER_IMPORT, object_type="file", object_id=file.name,
                             detail={"path": str(file), "summary": result.summary(), "skipped": len(result.skipped),
                                     "retired": len(result.retired)})
    except RosterError as exc:
        for problem in exc.problems:  # every bad row, then the one-line summary
            click.echo(problem.describe(), err=True)
        raise
    for problem in result.skipped:
        click.echo(f"skipped: {problem.describe()}", err=True)
    for household in result.retired:
        click.echo(f"{'would retire' if dry_run else 'retired'}: {household}")
    click.echo(result.summary(dry_run=dry_run))


# --- questionnaire --------------------------------------------------------------------------------------


@click.group("questionnaire", cls=SanlvGroup)
def questionnaire_group() -> None:
    """Questionnaires: show, validate, and list their prompts and recordings."""


@questionnaire_group.command("show")
@click.argument("key", default="default")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def questionnaire_show(key: str, fmt: str) -> None:
    """Show questionnaire KEY (a built-in key or a file path) in asking order."""
    questionnaire = resolve_questionnaire(key)
    if fmt == "json":
        echo_json(to_show_json(questionnaire))
        return
    click.echo(f"{questionnaire.key}: {questionnaire.title}")
    for number, step in enumerate(questionnaire.steps, 1):
        extra = []
        if step.rate:
            extra.append(f"rate={step.rate} positive={','.join(sorted(step.positive))}")
        if step.ask_if:
            extra.append("ask if " + " or ".join(f"{k} in {sorted(v)}" for k, v in step.ask_if.items()))
        if step.end_on:
            extra.append("ends on " + ", ".join(f"{d}={o}" for d, o in step.end_on.items()))
        click.echo(f"{number}. [{step.key}] {step.prompt}" + (f"  ({'; '.join(extra)})" if extra else ""))
        click.echo("   " + "  ".join(f"{d}={m}" for d, m in step.options.items()))


@questionnaire_group.command("validate")
@click.argument("file", type=click.Path(path_type=Path))
def questionnaire_validate(file: Path) -> None:
    """Check FILE and report every problem with its location."""
    try:
        questionnaire = load_questionnaire_file(file)
    except QuestionnaireError as exc:
        for problem in exc.problems:
            click.echo(f"{exc.source}: {problem}", err=True)
        raise SanlvError(f"{file}: {len(exc.problems)} problem(s)") from None
    click.echo(f"{file}: ok ({len(questionnaire.steps)} steps, rates: {', '.join(questionnaire.rates)})")


@questionnaire_group.command("prompts")
@click.argument("key", default="default")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def questionnaire_prompts(key: str, fmt: str) -> None:
    """List every prompt of KEY (a built-in key or a file path) and whether it has a recording.

    Recordings are looked for in SANLV_RECORDINGS_DIR/<questionnaire key>/ as <prompt>.wav or <prompt>.mp3;
    a prompt without one is spoken by text-to-speech.
    """
    questionnaire = resolve_questionnaire(key)
    settings = load_settings()  # this command needs no database: only the recordings folder
    folder = recording_folder(settings.recordings_dir, questionnaire)
    rows = []
    for prompt in prompts(questionnaire):
        found = find_recording(folder, prompt)
        rows.append(
            {
                "prompt": prompt.name,
                "kind": prompt.kind,
                "text": prompt.text,
                "recording": str(found) if found else None,
                "expected": [str(folder / name) for name in prompt.candidates()],
            }
        )
    if fmt == "json":
        echo_json({"key": questionnaire.key, "folder": str(folder), "prompts": rows})
        return
    recorded = sum(1 for row in rows if row["recording"])
    click.echo(f"{questionnaire.key}: {recorded} of {len(rows)} prompts recorded (folder {folder})")
    for row in rows:
        where = row["recording"] or "TTS (no " + " or ".join(Path(e).name for e in row["expected"]) + ")"
        click.echo(f"  {row['prompt']:<28} {'recorded' if row['recording'] else 'missing ':<9} {where}")
        click.echo(f"  {'':<28} {row['text']}")


# --- round ----------------------------------------------------------------------------------------------


@click.group("round", cls=SanlvGroup)
def round_group() -> None:
    """Survey rounds: create, launch, pause, resume, cancel, status."""


@round_group.command("create")
@click.option("--name", required=True)
@click.option(
    "--questionnaire",
    "questionnaire_ref",
    default="default",
    show_default=True,
    help="a built-in key, a YAML/JSON file, or version:N (a stored version, e.g. one uploaded on the web pages)",
)
@click.option("--sample", default="all", show_default=True, help="all | village:N | cadre:N")
@click.option("--seed", type=int)
@click.option("--window", "windows", default=None, help="e.g. 09:00-11:30,14:30-20:30")
@click.option(
    "--blocked", default=None, help="dates nobody is called (holidays), e.g. 2026-10-01..2026-10-07,2027-01-01"
)
@click.option("--max-attempts", type=int)
@click.option("--cps", type=float)
@click.option("--max-concurrent", type=int)
@click.option("--retry", default=None, help="e.g. busy=30m,no-answer=2h,failed=4h,machine=2h,dropped=1h")
@click.option("--starts-at", default=None, help="ISO time; local time if it has no offset")
@click.option("--ends-at", default=None, help="ISO time; local time if it has no offset")
@click.option("--exclude-unsure", is_flag=True, help="Leave 说不清 answers out of the rates' denominators.")
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="RATE=VALUE",
    help="Override a rate's target for this round, e.g. --target security=0.9 or --target satisfaction=90%.",
)
@click.option(
    "--machine-detection", is_flag=True, help="Ask Twilio to detect answering machines; they are hung up and retried."
)
@click.option("--caller-id", default=None, help="A number of the caller-ID pool the calls show (a village's own wins).")
@click.option("--accounts", default=None, help="Twilio accounts the round may dial through, e.g. a,b (default: all).")
@click.option(
    "--inbound",
    default=None,
    metavar="call-back|answer",
    help="What a call from a household of the sample does: call-back (default: no answers are taken; the"
    " office calls the number back at once, so only the number's holder answers) or answer (interview the"
    " caller on the inbound call; such responses are counted apart in the reports).",
)
@click.option(
    "--no-delivery-check",
    is_flag=True,
    help="Leave out the questionnaire's delivery check (was publicity material delivered to your door?).",
)
@click.option(
    "--notify",
    default=None,
    help="Send each sampled household this SMS the day before its first call (caller number and dates added).",
)
@click.option("--notify-holdout", type=float, default=0.0, help="share of households held out of the --notify SMS")
@click.option("--notify-seed", type=int, default=None, help="seed of the --notify hold-out draw")
def round_create(notify: str | None, notify_holdout: float, notify_seed: int | None, **options) -> None:
    """Create a round and sample its targets; prints the new round's id."""
    rt = runtime_or_exit()
    round_options = RoundOptions.from_cli(rt.settings, **options)
    if notify is not None and not notify.strip():
        raise NoticeError("--notify: the pre-survey message must not be empty")
    with session_scope(rt.sessions) as session:
        round_ = create_round(session, round_options)
        round_id = round_.id
        audit.record(session, cli_actor(), audit.ROUND_CREATE, object_type="round", object_id=round_id,
                     detail={"name": round_options.name, "sample": round_options.sample})
        if notify is not None:
            notice = create_presurvey_notice(
                session, round_, notify, holdout=notify_holdout, seed=notify_seed,
                from_number=rt.settings.twilio_from_number, tz=rt.settings.tz,
            )
            audit.record(session, cli_actor(), NOTICE_CREATE, object_type="notice", object_id=notice.id,
                         detail={"round": round_id, "holdout": notify_holdout})
            click.echo(f"pre-survey notice {notice.id}: {segment_count(notice.text or '').describe()}", err=True)
    click.echo(round_id)


def _transition(command: str):
    @round_group.command(command)
    @click.argument("round_id", metavar="ROUND", type=int)
    def run(round_id: int) -> None:
        rt = runtime_or_exit()
        with session_scope(rt.sessions) as session:
            status = change_round(session, round_id, command).status.value
            audit.record(session, cli_actor(), audit.ROUND_ACTIONS[command], object_type="round", object_id=round_id)
            # A launch or cancel carries the round's pre-survey notices with it.
            followed = follow_round(session, round_id, command) if command in ("launch", "cancel") else []
        # Work follows the commit: the dispatcher picks up a launched or resumed round.
        round_changed(rt.settings, round_id, command)
        for notice_id, notice_command in followed:
            notice_changed(rt.settings, notice_id, notice_command)
        click.echo(f"round {round_id}: {status}")

    run.__doc__ = f"{command.capitalize()} ROUND."
    return run


for _command in ("launch", "pause", "resume", "cancel"):
    _transition(_command)


@round_group.command("status")
@click.argument("round_id", metavar="ROUND", type=int)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def round_status(round_id: int, fmt: str) -> None:
    """A round's state, its targets counted by state, attempts, dial rate and ETA."""
    rt = runtime_or_exit()
    with rt.sessions() as session:
        report = round_status_report(session, round_id)
    if fmt == "json":
        echo_json(report)
        return
    click.echo(f"round {report['id']} {report['name']}: {report['status']}")
    for state, count in report["targets"].items():
        click.echo(f"  {state:<12} {count}")
    click.echo(
        f"  attempts {report['attempts']}, live calls {report['live_calls']}, "
        f"dial rate {report['dial_rate']:.2f}/s, eta {_duration(report['eta_seconds'])}"
    )


def _duration(seconds: int | None) -> str:
    """``5400`` -> ``1h 30m``; None (a draft or paused round) -> ``-``."""
    if seconds is None:
        return "-"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


# --- followup -------------------------------------------------------------------------------------------


@click.group("followup", cls=SanlvGroup)
def followup_group() -> None:
    """Follow-up visits (整改回访): record what happened."""


@followup_group.command("mark")
@click.argument("item_id", metavar="ITEM", type=int)
@click.option(
    "--status",
    required=True,
    type=click.Choice(["visited", "resolved", "unreachable"]),
    help="pending -> visited | unreachable; visited -> resolved | unreachable.",
)
@click.option("--note", default=None, help="What was found or done (备注).")
@click.option("--by", "actor", default=None, help="Who records it (default: the office).")
def followup_mark(item_id: int, status: str, note: str | None, actor: str | None) -> None:
    """Move follow-up ITEM to a new status, with a note; every change is kept with its time."""
    rt = runtime_or_exit()
    with session_scope(rt.sessions) as session:
        item = mark_followup(session, item_id, status, note, actor=actor or "office")
        label = STATUS_LABELS[item.status]
        audit.record(session, cli_actor(), audit.FOLLOWUP_MARK, object_type="followup", object_id=item_id,
                     detail={"status": status, "note": note, "by": actor})
    click.echo(f"回访事项 {item_id}：{label} / follow-up {item_id}: {status}")


# --- user -----------------------------------------------------------------------------------------------


@click.group("user", cls=SanlvGroup)
def user_group() -> None:
    """Web users: add, list, disable, set a password, issue an API token. The first admin is made here."""


def _new_password(from_stdin: bool) -> str:
    if from_stdin:
        # One line; only the line break is dropped (a password may begin or end with a space).
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt(
        "密码 / password", hide_input=True, confirmation_prompt="再输一次 / repeat the password", err=True
    )


PASSWORD_STDIN_HELP = "Read the password from the first line of standard input instead of prompting."


@user_group.command("add")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice([role.value for role in accounts.UserRole]))
@click.option("--cadre", "cadre_id", type=int, help="The roster cadre a cadre user is (required for --role cadre).")
@click.option("--password-stdin", is_flag=True, help=PASSWORD_STDIN_HELP)
def user_add(username: str, role: str, cadre_id: int | None, password_stdin: bool) -> None:
    """Add USERNAME with ROLE (admin, office, supervisor, or cadre with --cadre)."""
    rt = runtime_or_exit()
    name = accounts.normalise_username(username)  # a bad name fails before the password is asked
    password = _new_password(password_stdin)
    with session_scope(rt.sessions) as session:
        user = accounts.create_user(session, name, role, password, cadre_id=cadre_id)
        audit.record(session, cli_actor(), audit.USER_ADD, object_type="user", object_id=user.username,
                     detail={"role": role, "cadre": cadre_id})
    click.echo(f"用户 {name}（{accounts.ROLE_LABELS[accounts.UserRole(role)]}）已添加 / user {name} added")


@user_group.command("list")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def user_list(fmt: str) -> None:
    """Every user: role, linked cadre, whether disabled, last sign-in."""
    rt = runtime_or_exit()
    with rt.sessions() as session:
        rows = [
            {
                "username": user.username,
                "role": user.role.value,
                "cadre": {"id": user.cadre.id, "name": user.cadre.name} if user.cadre else None,
                "disabled": user.disabled,
                "created_at": user.created_at.isoformat(),
                "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
            }
            for user in accounts.list_users(session)
        ]
    if fmt == "json":
        echo_json({"users": rows})
        return
    if not rows:
        click.echo("（还没有用户，用 sanlv user add 添加）/ no users yet")
    tz = rt.settings.tz
    for row in rows:
        cadre = f"{row['cadre']['id']} {row['cadre']['name']}" if row["cadre"] else "-"
        last = _local(row["last_login_at"], tz) if row["last_login_at"] else "-"
        state = "停用/disabled" if row["disabled"] else "启用/active"
        click.echo(f"{row['username']:<20} {row['role']:<10} {state:<14} cadre={cadre}  last_login={last}")


def _user_change(command: str, action: str, change: Callable, doc: str, *, password: bool = False):
    @user_group.command(command)
    @click.argument("username")
    def run(username: str, password_stdin: bool = False) -> None:
        rt = runtime_or_exit()
        new_password = None
        if password:
            with rt.sessions() as session:
                accounts.get_user(session, username)  # an unknown name fails before the password is asked
            new_password = _new_password(password_stdin)
        with session_scope(rt.sessions) as session:
            user = accounts.get_user(session, username)
            message = change(session, user, new_password)
            audit.record(session, cli_actor(), action, object_type="user", object_id=user.username)
        click.echo(message)

    if password:
        run = click.option("--password-stdin", is_flag=True, help=PASSWORD_STDIN_HELP)(run)
    run.help = doc
    return run


def _disable(session, user, _password) -> str:
    accounts.disable_user(session, user)
    return f"用户 {user.username} 已停用，其会话和 API 令牌已失效 / user {user.username} disabled"


def _password(session, user, password) -> str:
    accounts.set_password(session, user, password)
    return f"用户 {user.username} 的密码已更改，其他会话已结束 / password of {user.username} changed"


def _revoke(session, user, _password) -> str:
    count = accounts.revoke_tokens(session, user)
    return f"已吊销 {user.username} 的 {count} 个 API 令牌 / {count} token(s) of {user.username} revoked"


_user_change("disable", audit.USER_DISABLE, _disable, "Disable USERNAME: no sign-in, sessions and tokens end.")
_user_change(
    "password", audit.USER_PASSWORD, _password, "Set a new password for USERNAME; their other sessions end.",
    password=True,
)
_user_change("revoke-tokens", audit.USER_TOKENS_REVOKE, _revoke, "Revoke every API token of USERNAME.")


@user_group.command("token")
@click.argument("username")
def user_token(username: str) -> None:
    """Issue an API token for USERNAME (Authorization: Bearer). It is printed once and never stored."""
    rt = runtime_or_exit()
    with session_scope(rt.sessions) as session:
        user = accounts.get_user(session, username)
        token = accounts.issue_token(session, user)
        audit.record(session, cli_actor(), audit.USER_TOKEN, object_type="user", object_id=user.username)
    click.echo("请妥善保存，此令牌不会再次显示 / keep it safe: this token is not shown again", err=True)
    click.echo(token)


# --- audit ----------------------------------------------------------------------------------------------


@click.command("audit")
@click.option("--since", default=None, help="ISO date or time; local time if it has no offset.")
@click.option("--user", "username", default=None, help="Only what this user did (or tried, for sign-ins).")
@click.option("--action", default=None, type=click.Choice(sorted(audit.ACTION_LABELS)), help="Only this action.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def audit_command(since: str | None, username: str | None, action: str | None, fmt: str) -> None:
    """Print the audit log, oldest first: who did what, when, from where."""
    rt = runtime_or_exit()
    since_at = parse_local_time(since, rt.settings, "--since") if since else None
    with rt.sessions() as session:
        rows = [
            {
                "at": entry.at.isoformat(),
                "username": entry.username,
                "action": entry.action,
                "object_type": entry.object_type,
                "object_id": entry.object_id,
                "detail": entry.detail,
                "remote_addr": entry.remote_addr,
            }
            for entry in audit.entries(session, since=since_at, username=username, action=action)
        ]
    if fmt == "json":
        echo_json({"entries": rows})
        return
    tz = rt.settings.tz
    for row in rows:
        what = f"{row['object_type']}:{row['object_id']}" if row["object_type"] else "-"
        detail = json.dumps(row["detail"], ensure_ascii=False) if row["detail"] else ""
        label = audit.ACTION_LABELS.get(row["action"], "")
        click.echo(
            f"{_local(row['at'], tz)}  {row['username']:<16} {row['action']:<16} {label:<8} {what:<16} "
            f"{row['remote_addr'] or '-':<15} {detail}".rstrip()
        )


def _local(iso: str, tz) -> str:
    return datetime.fromisoformat(iso).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


@click.group("callerid", cls=SanlvGroup)
def callerid_group() -> None:
    """The pool of caller IDs: local numbers shown to a village's or a round's residents."""


@callerid_group.command("add")
@click.argument("number")
@click.option("--account", default=None, help="The Twilio account that owns the number (default: any).")
@click.option("--label", default=None, help="A note for the office, e.g. 东村村委.")
def callerid_add(number: str, account: str | None, label: str | None) -> None:
    """Add a number to the pool."""
    rt = runtime_or_exit()
    with session_scope(rt.sessions) as session:
        caller_id = callerids.add_caller_id(session, number, account=account, label=label, settings=rt.settings)
        click.echo(caller_id.number)


@callerid_group.command("list")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def callerid_list(fmt: str) -> None:
    """The pool, with the villages and rounds each number is given to."""
    rt = runtime_or_exit()
    with rt.sessions() as session:
        rows = callerids.list_caller_ids(session)
    if fmt == "json":
        echo_json([row.__dict__ for row in rows])
        return
    for row in rows:
        given = [f"village {name}" for name in row.villages] + [f"round {rid}" for rid in row.rounds]
        click.echo(f"{row.number}  account={row.account or '-'}  {row.label or ''}  {', '.join(given) or '-'}")


@callerid_group.command("assign")
@click.argument("number")
@click.option("--village", default=None, help="The village (by name) whose calls show NUMBER.")
@click.option("--round", "round_id", type=int, default=None, help="The round whose calls show NUMBER.")
def callerid_assign(number: str, village: str | None, round_id: int | None) -> None:
    """Give a village or a round a caller ID of the pool (NUMBER `none` takes it away)."""
    rt = runtime_or_exit()
    with session_scope(rt.sessions) as session:
        what = callerids.assign_caller_id(
            session, None if number.lower() == "none" else number, village=village, round_id=round_id
        )
    click.echo(f"{what}: {number}")


# --- notice ---------------------------------------------------------------------------------------------


@click.group("notice", cls=SanlvGroup)
def notice_group() -> None:
    """SMS and voice notices to the roster, with a hold-out: create, launch, pause, resume, cancel, status."""


@notice_group.command("create")
@click.option("--name", required=True)
@click.option("--channel", required=True, type=click.Choice(["sms", "voice"]))
@click.option("--text", default=None, help="the SMS text (回复TD退订 is added), or the text a voice notice speaks")
@click.option("--recording", type=click.Path(path_type=Path), default=None, help="voice: a WAV or MP3 to play")
@click.option("--sample", default="all", show_default=True, help="all | village:N | cadre:N")
@click.option("--sample-seed", type=int, default=None, help="seed of a village:N / cadre:N sample")
@click.option("--holdout", type=float, default=0.0, show_default=True, help="share held out in each village")
@click.option("--seed", type=int, default=None, help="seed of the hold-out draw (required with --holdout)")
@click.option("--window", "windows", default=None, help="e.g. 09:00-11:30,14:30-20:30")
@click.option("--cps", type=float, default=None, help="messages (or calls) per second")
@click.option("--max-attempts", type=int, default=None)
@click.option("--starts-at", default=None, help="ISO time; local time if it has no offset")
@click.option("--ends-at", default=None, help="ISO time; local time if it has no offset")
def notice_create(recording: Path | None, **options) -> None:
    """Create a draft notice, sample its households and draw the hold-out; prints the new notice's id.

    The SMS segment count is shown (on stderr) before anything is sent.
    """
    rt = runtime_or_exit()
    if recording is not None:
        try:
            data = recording.read_bytes()
        except OSError as exc:
            raise NoticeError(f"--recording: {recording}: {exc.strerror or exc}") from None
        options["recording"] = "pending"  # validated below; stored only once the options are good
    notice_options = NoticeOptions.from_cli(rt.settings, **options)
    if recording is not None:
        name = save_notice_recording(rt.settings.recordings_dir, data)
        notice_options = NoticeOptions(**{**notice_options.__dict__, "recording": name})
    with session_scope(rt.sessions) as session:
        notice = create_notice(session, notice_options)
        audit.record(session, cli_actor(), NOTICE_CREATE, object_type="notice", object_id=notice.id,
                     detail={"name": notice.name, "channel": notice.channel.value, "holdout": notice.holdout})
        report = notice_status_report(session, notice.id)
    if notice_options.channel.value == "sms":
        click.echo(
            f"notice {report['id']}: {segment_count(notice.text or '').describe()}; "
            f"{report['households'] - report['held_out']} households to send, {report['held_out']} held out, "
            f"{report['messages_to_send']} segments in all",
            err=True,
        )
    else:
        click.echo(f"notice {report['id']}: {report['households'] - report['held_out']} households to call, "
                   f"{report['held_out']} held out", err=True)
    click.echo(report["id"])


def _notice_transition(command: str):
    @notice_group.command(command)
    @click.argument("notice_id", metavar="NOTICE", type=int)
    def run(notice_id: int) -> None:
        rt = runtime_or_exit()
        with session_scope(rt.sessions) as session:
            status = change_notice(session, notice_id, command).status.value
            audit.record(session, cli_actor(), NOTICE_ACTIONS[command], object_type="notice", object_id=notice_id)
        notice_changed(rt.settings, notice_id, command)
        click.echo(f"notice {notice_id}: {status}")

    run.__doc__ = f"{command.capitalize()} NOTICE."
    return run


for _command in ("launch", "pause", "resume", "cancel"):
    _notice_transition(_command)


@notice_group.command("status")
@click.argument("notice_id", metavar="NOTICE", type=int)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def notice_status(notice_id: int, fmt: str) -> None:
    """A notice's state, its households by state, delivery, and the hold-out."""
    rt = runtime_or_exit()
    with rt.sessions() as session:
        report = notice_status_report(session, notice_id)
    if fmt == "json":
        echo_json(report)
        return
    click.echo(f"notice {report['id']} {report['name']} ({report['channel']}): {report['status']}")
    if report["channel"] == "sms":
        click.echo(f"  {report['characters']} chars, {report['segments']} segment(s) ({report['encoding']})")
    click.echo(f"  households {report['households']}, held out {report['held_out']} "
               f"(holdout {report['holdout']:g}, seed {report['seed']})")
    for state, count in report["targets"].items():
        if count:
            click.echo(f"  {state:<12} {count}")
    for status, count in sorted(report["provider_statuses"].items()):
        click.echo(f"  provider {status:<12} {count}")
    click.echo(f"  delivered {report['delivered']}" + (
        f", heard to the end {report['heard_to_end']}" if "heard_to_end" in report else ""))


COMMAND_GROUPS = (
    db_group, roster_group, questionnaire_group, round_group, followup_group, user_group, audit_command,
    callerid_group, notice_group,
)

