"""``sanlv`` commands for residents' data: ``dnc`` (the do-not-call list), ``household forget`` and
``data retain``. Errors are one line (campaigns.cli.SanlvGroup); each change is audited as ``cli:<os user>``
in the same transaction.
"""

from __future__ import annotations

import csv
import sys
from datetime import timedelta
from pathlib import Path

import click

from campaigns import audit, dnc
from campaigns.cli import SanlvGroup, cli_actor, echo_json, runtime_or_exit
from campaigns.db import session_scope
from campaigns.phones import mask
from campaigns.privacy import PrivacyError, forget_household, forgotten, retain_notices, retain_rounds
from campaigns.roster import RosterError, RosterLimits
from campaigns.spreadsheets import spreadsheet_text

DNC_CSV_COLUMNS = ("phone", "source", "reason", "round", "added_by", "added_at")


@click.group("dnc", cls=SanlvGroup)
def dnc_group() -> None:
    """The do-not-call list: numbers never dialled again, in any round."""


@dnc_group.command("list")
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text")
@click.option("--full", is_flag=True, help="Full numbers instead of masked ones (audited as an export).")
def dnc_list(fmt: str, full: bool) -> None:
    """Print the list, newest first (numbers masked unless --full)."""
    rt = runtime_or_exit()
    with session_scope(rt.sessions) as session:
        rows = [
            {
                "phone": entry.phone if full else mask(entry.phone),
                "source": entry.source.value,
                "reason": entry.reason,
                "round": entry.round_id,
                "added_by": entry.actor or "",
                "added_at": entry.created_at.astimezone(rt.settings.tz).isoformat(timespec="seconds"),
            }
            for entry in dnc.entries(session)
            if entry.phone is not None
        ]
        hashed = dnc.forgotten_count(session)
        if full:
            audit.record(session, cli_actor(), audit.EXPORT, object_type="dnc", detail={"format": fmt, "full": True})
    if fmt == "json":
        echo_json({"entries": rows, "forgotten": hashed})
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(DNC_CSV_COLUMNS)
        for row in rows:
            writer.writerow([spreadsheet_text(str(row[c] if row[c] is not None else "")) for c in DNC_CSV_COLUMNS])
        return
    for row in rows:
        click.echo(f"{row['phone']}  {row['source']:<6}  {row['added_at']}  {row['reason']}")
    click.echo(f"{len(rows)} numbers on the do-not-call list; {hashed} more kept as keyed hashes (erased on request)")


@dnc_group.command("add")
@click.argument("phone")
@click.option("--reason", required=True, help="Why (e.g. the resident called the office).")
def dnc_add(phone: str, reason: str) -> None:
    """Put PHONE on the list; it is not dialled again from now on, in any round."""
    rt = runtime_or_exit()
    actor = cli_actor()
    with session_scope(rt.sessions) as session:
        entry = dnc.add(session, phone, reason, actor=actor)
        shown = mask(entry.phone or "")
        audit.record(
            session, actor, audit.DNC_ADD, object_type="phone", object_id=shown, detail={"reason": entry.reason}
        )
    click.echo(f"{shown} added to the do-not-call list (已加入免打扰名单)")


@dnc_group.command("remove")
@click.argument("phone")
@click.option("--reason", required=True, help="Why (the resident's own request to take part again).")
def dnc_remove(phone: str, reason: str) -> None:
    """Take PHONE off the list (rounds sampled from now on may dial it)."""
    rt = runtime_or_exit()
    actor = cli_actor()
    with session_scope(rt.sessions) as session:
        number = dnc.parse_phone(phone)
        entry = dnc.remove(session, phone, reason, actor=actor)
        audit.record(
            session, actor, audit.DNC_REMOVE, object_type="phone", object_id=mask(number),
            detail={"reason": dnc.check_reason(reason), "was": entry.reason},
        )  # fmt: skip
    click.echo(f"{mask(number)} removed from the do-not-call list (已移出免打扰名单)")


@dnc_group.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--reason", default=None, help="For rows without a reason column (default: the file's name).")
def dnc_import(file: Path, reason: str | None) -> None:
    """Put every number of FILE (CSV or XLSX; a 电话/phone column, optional 原因/reason) on the list.

    All or nothing: a bad row stops the import, and each bad row is named by its line."""
    rt = runtime_or_exit()
    actor = cli_actor()
    try:
        with session_scope(rt.sessions) as session:
            result = dnc.import_file(
                session, file, actor=actor, reason=reason, limits=RosterLimits.from_settings(rt.settings)
            )
            audit.record(
                session, actor, audit.DNC_IMPORT, object_type="file", object_id=file.name,
                detail={"added": result.added, "already": result.already, "duplicates": result.duplicates},
            )  # fmt: skip
    except RosterError as exc:
        for problem in exc.problems:
            click.echo(problem.describe(), err=True)
        raise
    click.echo(result.summary())


@click.group("household", cls=SanlvGroup)
def household_group() -> None:
    """One household's data."""


@household_group.command("forget")
@click.argument("phone")
@click.option("--reason", required=True, help="The request (e.g. the resident's letter of 2026-12-01).")
def household_forget(phone: str, reason: str) -> None:
    """Erase PHONE's phone-level data everywhere (PIPL art. 47); rates stay; the number is never called again."""
    rt = runtime_or_exit()
    actor = cli_actor()
    with session_scope(rt.sessions) as session:
        result = forget_household(session, phone, reason, actor=actor)
        audit.record(
            session, actor, audit.HOUSEHOLD_FORGET, object_type="phone", object_id=None,
            detail={"reason": dnc.check_reason(reason), "households": result.households, "targets": result.targets,
                    "attempts": result.attempts, "key_presses": result.key_presses, "follow_ups": result.follow_ups},
        )  # fmt: skip
    forgotten(rt.settings, result.phone, result.call_sids)
    click.echo(result.summary())


@click.group("data", cls=SanlvGroup)
def data_group() -> None:
    """What sanlv keeps, and for how long (docs/privacy.md)."""


@data_group.command("retain")
@click.option(
    "--older-than", "days", is_flag=False, flag_value="", default=None, metavar="DAYS",
    help="Rounds and notices that finished more than DAYS days ago (default: SANLV_RETENTION_DAYS).",
)  # fmt: skip
@click.option(
    "--dry-run", is_flag=True, help="List the rounds and notices that would be pseudonymised; change nothing."
)
def data_retain(days: str | None, dry_run: bool) -> None:
    """Pseudonymise the phone-level data of old finished rounds and notices (numbers, names, notes go; figures
    stay)."""
    rt = runtime_or_exit()
    if not days:
        if rt.settings.retention_days is None:
            raise PrivacyError("--older-than: give DAYS, or set SANLV_RETENTION_DAYS")
        older_than = rt.settings.retention_days
    else:
        try:
            older_than = int(days)
        except ValueError:
            raise PrivacyError(f"--older-than: {days!r} is not a whole number of days") from None
        if older_than < 0:
            raise PrivacyError("--older-than: must be 0 days or more")
    with session_scope(rt.sessions) as session:
        done = retain_rounds(session, timedelta(days=older_than), dry_run=dry_run)
        notices = retain_notices(session, timedelta(days=older_than), dry_run=dry_run)
        if dry_run:
            session.rollback()
        elif done or notices:
            audit.record(
                session, cli_actor(), audit.DATA_RETAIN, object_type="round",
                object_id=",".join(str(r.id) for r in done)[:100],
                detail={
                    "older_than_days": older_than, "rounds": [r.id for r in done], "notices": [n.id for n in notices],
                },
            )  # fmt: skip
    verb = "would pseudonymise" if dry_run else "pseudonymised"
    for item in done:
        finished = item.finished_at.astimezone(rt.settings.tz).date().isoformat()
        click.echo(
            f"round {item.id} {item.name} (finished {finished}): {item.targets} targets, {item.follow_ups} follow-ups"
        )
    for notice in notices:
        finished = notice.finished_at.astimezone(rt.settings.tz).date().isoformat()
        click.echo(f"notice {notice.id} {notice.name} (finished {finished}): {notice.targets} targets")
    zh = "试运行, 未修改" if dry_run else "已去标识"
    click.echo(
        f"{verb} {len(done)} rounds and {len(notices)} notices finished more than {older_than} days ago"
        f" ({zh}: {len(done)}轮, {len(notices)}条通知)"
    )


PRIVACY_GROUPS = (dnc_group, household_group, data_group)
