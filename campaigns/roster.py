"""Roster import: villages, households' phone numbers and their cadres from a CSV or XLSX file.

The office's roster arrives as whatever Excel on a Chinese Windows PC wrote: a GBK CSV, a UTF-8 CSV with or
without a BOM, or an XLSX workbook, with Chinese or English headers. One row is one phone number to call.

Import is all-or-nothing. Every row is checked first; if any row is bad, :class:`RosterError` lists each bad
row (line, column, reason in Chinese and English) and nothing is written, unless ``skip_invalid`` asks for
the good rows to be imported and the bad ones reported as skipped. Importing the same file twice changes
nothing. The service never commits: the caller owns the transaction.

Performance: the file is validated in memory, existing rows are loaded with a few chunked ``IN`` queries,
and households are written with bulk INSERT/UPDATE statements, so 100k rows take seconds, not a query each.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import BindParameter, bindparam, insert, select, update
from sqlalchemy.orm import Session

from campaigns.db import utcnow
from campaigns.errors import SanlvError
from campaigns.hashing import phone_hash
from campaigns.models import Answer, Cadre, DoNotCall, Household, Response, RoundTarget, Village
from campaigns.phones import PhoneNumberError, mask, normalise
from campaigns.settings import Settings

__all__ = ["ImportResult", "RosterError", "RosterLimits", "RowProblem", "import_roster", "read_roster"]

# Canonical column keys.
VILLAGE = "village"
HOUSEHOLD = "household"
PHONE = "phone"
CADRE = "cadre"
CADRE_PHONE = "cadre_phone"

REQUIRED_COLUMNS = (VILLAGE, PHONE, CADRE)
COLUMN_LABELS = {
    VILLAGE: "村/village",
    HOUSEHOLD: "户主/household",
    PHONE: "电话/phone",
    CADRE: "包户干部/cadre",
    CADRE_PHONE: "干部电话/cadre_phone",
}

# Accepted headers, compared after _header_key() (NFKC, case-folded, without spaces, "_", "-", "*", ":").
# Synonyms are listed only where a township roster could not mean anything else by them; two headers that
# map to the same column are reported as a duplicated column rather than guessed between.
_HEADER_SYNONYMS: dict[str, tuple[str, ...]] = {
    VILLAGE: ("村", "村名", "村庄", "村居", "行政村", "所在村", "村名称", "village", "villagename"),
    HOUSEHOLD: (
        "户主",
        "户主姓名",
        "户主名",
        "户名",
        "姓名",
        "household",
        "householder",
        "householdname",
        "headofhousehold",
        "name",
    ),
    PHONE: (
        "电话",
        "电话号码",
        "手机",
        "手机号",
        "手机号码",
        "联系电话",
        "户主电话",
        "户主手机",
        "phone",
        "phonenumber",
        "mobile",
        "tel",
        "telephone",
    ),
    CADRE: ("包户干部", "干部", "网格员", "包户干部姓名", "干部姓名", "包户人", "cadre", "cadrename"),
    CADRE_PHONE: (
        "干部电话",
        "干部手机",
        "干部手机号",
        "干部联系电话",
        "包户干部电话",
        "包户干部手机",
        "网格员电话",
        "网格员手机",
        "cadrephone",
        "cadremobile",
        "cadretel",
    ),
}

MAX_NAME_LENGTH = 100  # villages.name, cadres.name, households.name are String(100)
TEXT_EXTENSIONS = frozenset({".csv", ".tsv", ".txt"})
XLSX_EXTENSIONS = frozenset({".xlsx", ".xlsm"})
_CHUNK = 500  # IN-list size: well under SQLite's bound-parameter limit on every version we may meet
_WRITE_BATCH = 5000  # rows per bulk statement; keeps the parameter lists of a 100k-row import bounded

MB = 1024 * 1024


@dataclass(frozen=True)
class RosterLimits:
    """How big a roster file may be; each is checked before the rows are read (settings: SANLV_ROSTER_*)."""

    max_bytes: int = 20 * MB  # the file as uploaded (SANLV_ROSTER_MAX_MB)
    max_rows: int = 200_000  # data rows under the header (SANLV_ROSTER_MAX_ROWS)
    # An XLSX file is a zip archive: its parts once decompressed, which is what a reader holds (a small
    # file can unpack to gigabytes) (SANLV_ROSTER_MAX_XLSX_MB).
    max_xlsx_bytes: int = 200 * MB

    @classmethod
    def from_settings(cls, settings: Settings) -> RosterLimits:
        return cls(settings.roster_max_mb * MB, settings.roster_max_rows, settings.roster_max_xlsx_mb * MB)


_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Excel 97-2003 .xls (and other OLE documents)
# What Excel shows for a long number in a General-formatted column, and writes to CSV with digits lost.
_SCIENTIFIC = re.compile(r"^[+-]?\d+(\.\d+)?[eE][+-]?\d+$")
# Characters that copy-paste from web pages and WeChat leave in cells; invisible, but they break matching.
_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060\u00ad"), None)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- problems and results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowProblem:
    """One thing wrong with the file, where a spreadsheet user would look for it.

    Attributes:
        line: 1-based row number as a spreadsheet shows it (the header is normally line 1); 0 for the file.
        column: the header as written in the file (e.g. ``电话``), or ``""`` for a row- or file-level problem.
        value: the offending cell's text (or the file name for a file-level problem); may be empty.
        reason_zh: why, in Chinese, for the office.
        reason_en: why, in English, for the log.
    """

    line: int
    column: str
    value: str
    reason_zh: str
    reason_en: str

    def describe(self) -> str:
        """One line in Chinese and English, e.g. ``第3行 电话 '12345': ... / line 3, column 电话 '12345': ...``."""
        shown = f" '{_shorten(self.value)}'" if self.value else ""
        if self.line == 0:
            return f"文件{shown}: {self.reason_zh} / file{shown}: {self.reason_en}"
        if self.column:
            return (
                f"第{self.line}行 {self.column}{shown}: {self.reason_zh} / "
                f"line {self.line}, column {self.column}{shown}: {self.reason_en}"
            )
        return f"第{self.line}行{shown}: {self.reason_zh} / line {self.line}{shown}: {self.reason_en}"


class RosterError(SanlvError):
    """The file cannot be imported; nothing was.

    Attributes:
        source: the file's name, for messages.
        problems: every problem found, in file order.
        kind: ``"file"`` (unreadable or empty), ``"header"`` (bad header row) or ``"rows"`` (bad data rows).
    """

    def __init__(self, source: str, problems: Sequence[RowProblem], kind: Literal["file", "header", "rows"] = "rows"):
        self.source = source
        self.problems = list(problems)
        self.kind = kind
        super().__init__(self.summary())

    @property
    def bad_rows(self) -> int:
        """How many distinct data rows have at least one problem."""
        return len({p.line for p in self.problems if p.line > 0})

    def summary(self) -> str:
        """One line in English and Chinese, e.g. ``roster.csv: 3 bad rows, nothing imported (导入失败: ...)``."""
        if self.kind == "file" and self.problems:
            first = self.problems[0]
            return f"{self.source}: {first.reason_en}, nothing imported (导入失败: {first.reason_zh}, 未导入任何数据)"
        if self.kind == "header":
            n = len(self.problems)
            return (
                f"{self.source}: {_n(n, 'problem')} in the header row, nothing imported "
                f"(导入失败: 表头有{n}处错误, 未导入任何数据)"
            )
        n = self.bad_rows
        return f"{self.source}: {_n(n, 'bad row')}, nothing imported (导入失败: {n}行有误, 未导入任何数据)"


@dataclass
class ImportResult:
    """What an import did (or, in a dry run, would do).

    Attributes:
        rows: data rows read from the file (not counting empty rows), skipped ones included.
        created: households added.
        updated: known numbers whose village, cadre or household name changed.
        unchanged: known numbers the file left as they were.
        villages_created: villages the file named that did not exist.
        cadres_created: cadres (name, phone) the file named that did not exist.
        skipped: problems of the rows left out under ``skip_invalid`` (a row may have several).
        source: the file's name, for messages.
    """

    rows: int
    created: int
    updated: int
    unchanged: int
    villages_created: int
    cadres_created: int
    skipped: list[RowProblem] = field(default_factory=list)
    source: str = ""
    replace: bool = False  # a full roster: households it does not list are retired
    retired: list[str] = field(default_factory=list)  # households retired (or to be): "village 户主 138****1234"
    restored: int = 0  # retired households the file lists again
    relisted: int = 0  # numbers forgotten on request that the file brings back: on the do-not-call list again

    @property
    def skipped_rows(self) -> int:
        """How many distinct rows were skipped."""
        return len({p.line for p in self.skipped})

    def summary(self, dry_run: bool = False) -> str:
        """One line in English and Chinese."""
        prefix = f"{self.source}: " if self.source else ""
        skipped = self.skipped_rows
        if dry_run:
            en = (
                f"{prefix}dry run, nothing written: {_n(self.rows, 'row')}; "
                f"would create {_n(self.created, 'household')}, update {self.updated}, "
                f"leave {self.unchanged} unchanged; "
                f"{_n(self.villages_created, 'new village')}, {_n(self.cadres_created, 'new cadre')}"
            )
            zh = (
                f"试运行, 未写入: 共{self.rows}行, 将新增{self.created}户, 更新{self.updated}户, "
                f"{self.unchanged}户不变, 新建{self.villages_created}个村、{self.cadres_created}名干部"
            )
        else:
            en = (
                f"{prefix}{_n(self.rows, 'row')}; {_n(self.created, 'household')} created, {self.updated} updated, "
                f"{self.unchanged} unchanged; {_n(self.villages_created, 'village')} and "
                f"{_n(self.cadres_created, 'cadre')} created"
            )
            zh = (
                f"导入完成: 共{self.rows}行, 新增{self.created}户, 更新{self.updated}户, "
                f"{self.unchanged}户不变, 新建{self.villages_created}个村、{self.cadres_created}名干部"
            )
        if skipped:
            en += f"; {_n(skipped, 'row')} skipped"
            zh += f", 跳过{skipped}行"
        if self.replace:
            verb = "would retire" if dry_run else "retired"
            en += f"; {verb} {_n(len(self.retired), 'household')} the file does not list"
            zh += f", {'将停用' if dry_run else '停用'}{len(self.retired)}户 (文件中没有)"
            if self.restored:
                en += f", {self.restored} retired listed again"
                zh += f", {self.restored}户恢复"
        if self.relisted:
            en += f"; {self.relisted} on the do-not-call list (erased on request) stay on it"
            zh += f", {self.relisted}个号码曾申请删除, 仍在免打扰名单"
        return f"{en} ({zh})"


# --- reading the file --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RosterRow:
    """One good row, normalised: what the database should hold for one phone number."""

    line: int
    phone: str  # E.164
    village: str
    cadre: str
    cadre_phone: str  # E.164, or "" when the file gives none
    household: str | None  # None when the cell is empty (or the file has no household column)


# The raw table, read lazily: (line, cells) for every row, cells as the reader gave them (str, int, float, ...).
_Rows = Iterator[tuple[int, list[Any]]]


def _cell_text(value: Any) -> str:
    """A cell as text: None is empty; whitespace (full-width too) trimmed and collapsed; 1.0 is ``1``."""
    if value is None:
        return ""
    if isinstance(value, bool):  # before int: bool is an int subclass
        text = "TRUE" if value else "FALSE"
    elif isinstance(value, float) and value.is_integer():
        # Excel stores every number as a double: 13812345678 arrives as 13812345678.0.
        text = str(int(value))
    elif isinstance(value, datetime | date | time):
        text = value.isoformat()
    else:
        text = str(value)
    return " ".join(text.translate(_INVISIBLE).split())


def _header_key(text: str) -> str:
    # NFKC folds full-width letters and colons; "*" marks required columns in many templates.
    folded = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[\s_\-*:.]+", "", folded)


_HEADER_LOOKUP = {_header_key(name): key for key, names in _HEADER_SYNONYMS.items() for name in names}


def _file_problem(source: str, reason_zh: str, reason_en: str) -> RosterError:
    return RosterError(source, [RowProblem(0, "", source, reason_zh, reason_en)], kind="file")


def _decode(data: bytes, source: str) -> str:
    """Bytes to text: BOM first, then strict UTF-8, then GB18030 (a superset of GBK and GB2312).

    Strict UTF-8 goes first because GBK text is practically never valid UTF-8, while UTF-8 text often
    decodes (wrongly) as GB18030.
    """
    encodings: tuple[str, ...]
    if data.startswith(b"\xef\xbb\xbf"):
        encodings = ("utf-8-sig",)
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encodings = ("utf-16",)  # Excel's "Unicode text" export
    else:
        encodings = ("utf-8", "gb18030")
    for encoding in encodings:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise _file_problem(
        source,
        "无法识别文件编码, 请另存为 UTF-8 或 GBK 编码的 CSV, 或 XLSX",
        "cannot decode the file as UTF-8 or GBK/GB18030; save it as a UTF-8 or GBK CSV, or as XLSX",
    )


def _read_text(path: Path, source: str) -> _Rows:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _file_problem(
            source, f"无法读取文件 ({exc.strerror})", f"cannot read the file ({exc.strerror})"
        ) from None
    if data.startswith((_ZIP_MAGIC, _OLE_MAGIC)):
        raise _file_problem(
            source,
            "这是 Excel 工作簿而不是 CSV 文本, 请另存为 .xlsx 或 CSV",
            "this is an Excel workbook, not CSV text; save it as .xlsx or as CSV",
        )
    text = _decode(data, source)
    if "\x00" in text:
        # Text never holds NUL; this is a binary file (or UTF-16 without its BOM) with a .csv name.
        raise _file_problem(
            source,
            "不是文本文件, 请在 Excel 中另存为 CSV (逗号分隔) 或 .xlsx",
            "not a text file; save it from Excel as CSV (comma delimited) or .xlsx",
        )
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    # Excel writes commas; its "Unicode text" export writes tabs; some European locales write semicolons.
    delimiter = max(",\t;", key=first_line.count) if first_line else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    return _csv_rows(reader, source)


def _csv_rows(reader: Iterator[list[str]], source: str) -> _Rows:
    try:
        # Row numbers count records, not physical lines: a quoted cell with a line break is still one row,
        # as Excel shows it.
        for line, cells in enumerate(reader, start=1):
            yield line, list(cells)
    except csv.Error as exc:
        raise _file_problem(source, f"不是有效的 CSV 文件 ({exc})", f"not a valid CSV file ({exc})") from None


def _xlsx_problem(source: str, exc: BaseException) -> RosterError:
    reason = getattr(exc, "strerror", None) or type(exc).__name__
    return _file_problem(
        source,
        f"无法读取 XLSX 文件 ({reason}), 请用 Excel 打开后重新另存为 .xlsx",
        f"cannot read the XLSX file ({reason}); open it in Excel and save it again as .xlsx",
    )


def _check_unpacked_size(path: Path, source: str, limits: RosterLimits) -> None:
    """Refuse a workbook whose parts unpack to more than the limit, before any part is decompressed.

    The sizes are those the archive declares; a reader never gets more than the declared size of a part
    (zipfile stops there and checks the CRC), so a lying archive fails instead of filling the memory.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (OSError, zipfile.BadZipFile) as exc:
        raise _xlsx_problem(source, exc) from None
    if unpacked > limits.max_xlsx_bytes:
        raise _file_problem(
            source,
            f"XLSX 文件解压后有 {unpacked / MB:.0f} MB, 超过上限 {limits.max_xlsx_bytes / MB:.0f} MB"
            " (SANLV_ROSTER_MAX_XLSX_MB); 请删去多余的工作表、图片和格式后另存, 或改用 CSV",
            f"the XLSX file unpacks to {unpacked / MB:.0f} MB, over the limit of {limits.max_xlsx_bytes / MB:.0f} MB"
            " (SANLV_ROSTER_MAX_XLSX_MB); remove extra sheets, pictures and formatting, or save it as CSV",
        )


def _read_xlsx(path: Path, source: str, limits: RosterLimits) -> _Rows:
    _check_unpacked_size(path, source, limits)
    return _xlsx_rows(path, source)


def _xlsx_rows(path: Path, source: str) -> _Rows:
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        with warnings.catch_warnings():
            # openpyxl warns about styles, data validation and extensions it does not read; the cell values
            # we need are unaffected, and the office cannot act on those warnings.
            warnings.simplefilter("ignore")
            workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
            try:
                if not workbook.worksheets:
                    raise _file_problem(source, "工作簿中没有工作表", "the workbook has no worksheet")
                sheet = workbook.worksheets[0]
                # Some generators write a wrong <dimension>; without this, read-only mode trusts it and
                # silently drops rows or columns.
                sheet.reset_dimensions()
                for line, cells in enumerate(sheet.iter_rows(values_only=True), 1):
                    yield line, list(cells)
            finally:
                workbook.close()
    except (OSError, zipfile.BadZipFile, InvalidFileException, KeyError, ValueError) as exc:
        raise _xlsx_problem(source, exc) from None


def _read_sheet(path: Path, source: str, limits: RosterLimits) -> _Rows:
    if not path.is_file():
        raise _file_problem(source, "文件不存在", "no such file")
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise _file_problem(
            source,
            f"文件有 {size / MB:.1f} MB, 超过上限 {limits.max_bytes / MB:.0f} MB (SANLV_ROSTER_MAX_MB); 请分成几个文件导入",
            f"the file is {size / MB:.1f} MB, over the limit of {limits.max_bytes / MB:.0f} MB (SANLV_ROSTER_MAX_MB);"
            " split it into several files",
        )
    suffix = path.suffix.lower()
    if suffix in TEXT_EXTENSIONS:
        return _read_text(path, source)
    if suffix in XLSX_EXTENSIONS:
        return _read_xlsx(path, source, limits)
    if suffix == ".xls":
        raise _file_problem(
            source,
            "不支持旧版 Excel 97-2003 (.xls) 格式, 请在 Excel 中另存为 .xlsx 或 CSV",
            "the old Excel 97-2003 (.xls) format is not supported; save it as .xlsx or CSV in Excel",
        )
    raise _file_problem(
        source,
        f"不支持的文件类型 '{path.suffix or '(无扩展名)'}', 请使用 .csv 或 .xlsx",
        f"unsupported file type '{path.suffix or '(no extension)'}'; use .csv or .xlsx",
    )


# --- validating ----------------------------------------------------------------------------------------------


def _map_header(source: str, line: int, cells: list[str]) -> dict[str, tuple[int, str]]:
    """Map canonical column keys to (index, header as written); raise RosterError for a bad header row."""
    columns: dict[str, tuple[int, str]] = {}
    problems: list[RowProblem] = []
    accepted = "; ".join(COLUMN_LABELS.values())
    for index, written in enumerate(cells):
        if not written:
            continue  # an unnamed column; any data under it is reported per row
        key = _HEADER_LOOKUP.get(_header_key(written))
        if key is None:
            problems.append(
                RowProblem(
                    line,
                    written,
                    "",
                    f"无法识别的列名, 可用的列名: {accepted}",
                    f"unknown column; the columns are: {accepted}",
                )
            )
        elif key in columns:
            first = columns[key][1]
            problems.append(
                RowProblem(
                    line,
                    written,
                    "",
                    f"与列 '{first}' 重复, 都表示 {COLUMN_LABELS[key]}",
                    f"duplicates column '{first}': both mean {COLUMN_LABELS[key]}",
                )
            )
        else:
            columns[key] = (index, written)
    for key in REQUIRED_COLUMNS:
        if key not in columns:
            problems.append(
                RowProblem(
                    line,
                    "",
                    "",
                    f"缺少必需的列: {COLUMN_LABELS[key]}",
                    f"missing required column: {COLUMN_LABELS[key]}",
                )
            )
    if problems:
        raise RosterError(source, problems, kind="header")
    return columns


class _PhoneCache:
    """``normalise`` with memory: cadre numbers repeat on every row of their households."""

    def __init__(self) -> None:
        self._seen: dict[str, str | PhoneNumberError] = {}

    def __call__(self, text: str) -> str:
        result = self._seen.get(text)
        if result is None:
            try:
                result = normalise(text)
            except PhoneNumberError as exc:
                result = exc
            self._seen[text] = result
        if isinstance(result, PhoneNumberError):
            raise result
        return result


def _check_phone(text: str, parse: _PhoneCache) -> tuple[str | None, tuple[str, str] | None]:
    """(E.164, None) or (None, (reason_zh, reason_en))."""
    if _SCIENTIFIC.match(text):
        return None, (
            "号码被 Excel 改成了科学计数法, 位数已丢失; 请把该列设为文本格式后重新填写并导出",
            "Excel turned the number into scientific notation and lost digits; format the column as text, "
            "re-enter the numbers and export again",
        )
    try:
        return parse(text), None
    except PhoneNumberError as exc:
        return None, (exc.reason_zh, exc.reason_en)


class _RowChecker:
    """Checks data rows against the header's columns, remembering numbers seen to catch duplicates."""

    def __init__(self, columns: dict[str, tuple[int, str]]):
        self.columns = columns
        self.named = {index for index, _ in columns.values()}
        self.parse = _PhoneCache()
        self.first_line_of: dict[str, int] = {}  # E.164 -> the line it first appeared on

    def _cell(self, cells: list[str], key: str) -> str:
        if key not in self.columns:
            return ""
        index = self.columns[key][0]
        return cells[index] if index < len(cells) else ""

    def check(self, line: int, cells: list[str]) -> tuple[RosterRow | None, list[RowProblem]]:
        """(the normalised row, []) for a good row; (None, its problems) for a bad one.

        Args:
            line: the row's line number.
            cells: the row's cells as text (see _cell_text).
        """
        problems: list[RowProblem] = []

        def problem(key: str, value: str, zh: str, en: str) -> None:
            problems.append(RowProblem(line, self.columns[key][1] if key in self.columns else "", value, zh, en))

        for index, value in enumerate(cells):
            if index not in self.named and value:
                problems.append(
                    RowProblem(
                        line,
                        "",
                        value,
                        f"第{index + 1}列有数据但没有列名",
                        f"column {index + 1} has data but no header",
                    )
                )

        village, cadre = self._cell(cells, VILLAGE), self._cell(cells, CADRE)
        household = self._cell(cells, HOUSEHOLD)
        if not village:
            problem(VILLAGE, "", "村名为空", "the village is missing")
        if not cadre:
            problem(CADRE, "", "包户干部为空", "the cadre is missing")
        for key, text in ((VILLAGE, village), (CADRE, cadre), (HOUSEHOLD, household)):
            if len(text) > MAX_NAME_LENGTH:
                problem(key, text, f"超过{MAX_NAME_LENGTH}个字", f"longer than {MAX_NAME_LENGTH} characters")

        phone_text = self._cell(cells, PHONE)
        phone: str | None = None
        if not phone_text:
            problem(PHONE, "", "电话为空", "the phone number is missing")
        else:
            phone, reason = _check_phone(phone_text, self.parse)
            if reason:
                problem(PHONE, phone_text, *reason)
            elif phone is not None:
                first = self.first_line_of.setdefault(phone, line)
                if first != line:
                    problem(PHONE, phone_text, f"与第{first}行的号码重复", f"same number as line {first}")

        cadre_phone = ""
        cadre_phone_text = self._cell(cells, CADRE_PHONE)
        if cadre_phone_text:
            parsed, reason = _check_phone(cadre_phone_text, self.parse)
            if reason:
                problem(CADRE_PHONE, cadre_phone_text, *reason)
            else:
                cadre_phone = parsed or ""

        if problems or phone is None:
            return None, problems
        return RosterRow(line, phone, village, cadre, cadre_phone, household or None), []


def _validate(
    rows: _Rows, source: str, limits: RosterLimits
) -> tuple[list[RosterRow], list[RowProblem], int, bool]:
    """Check every row. Returns (good rows, problems of bad rows, data rows read, has household column).

    The header row is checked before any data row is read, and reading stops at the row limit.
    """
    texts = ((line, [_cell_text(c) for c in cells]) for line, cells in rows)
    data = ((line, cells) for line, cells in texts if any(cells))
    first = next(data, None)
    if first is None:
        raise _file_problem(source, "文件为空, 没有表头", "the file is empty: no header row")
    header_line, header_cells = first
    columns = _map_header(source, header_line, header_cells)

    checker = _RowChecker(columns)
    good: list[RosterRow] = []
    problems: list[RowProblem] = []
    count = 0
    for line, cells in data:
        count += 1
        if count > limits.max_rows:
            raise _file_problem(
                source,
                f"数据行超过上限 {limits.max_rows} 行 (SANLV_ROSTER_MAX_ROWS, 第{line}行); 请分成几个文件导入",
                f"more than {limits.max_rows} data rows, the limit (SANLV_ROSTER_MAX_ROWS; line {line});"
                " split it into several files",
            )
        row, row_problems = checker.check(line, cells)
        if row is not None:
            good.append(row)
        problems.extend(row_problems)
    if count == 0:
        raise _file_problem(source, "表头下面没有数据行", "no data rows under the header")
    return good, problems, count, HOUSEHOLD in columns


def read_roster(
    path: str | Path, limits: RosterLimits | None = None
) -> tuple[list[RosterRow], list[RowProblem], int, bool]:
    """Read and check a roster file without touching the database.

    Args:
        path: a .csv/.tsv/.txt (UTF-8, UTF-8 with BOM, GBK/GB18030, UTF-16 with BOM) or .xlsx/.xlsm file.

    Returns:
        (good rows, problems of the bad rows, data rows read, whether the file has a household column).

    Raises:
        RosterError: the file cannot be read, is empty, is over a limit of ``limits`` (default
            RosterLimits()), or its header row is bad (``kind`` says which).
    """
    path = Path(path)
    limits = limits or RosterLimits()
    return _validate(_read_sheet(path, path.name, limits), path.name, limits)


# --- writing -----------------------------------------------------------------------------------------------

_T = TypeVar("_T")


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _move_round_figures(session: Session, households: list[tuple[int, int]]) -> None:
    """Households that moved village take their targets and answers with them (the reports' copies of the
    village, see "Report figures" in campaigns.models): a household's village in a report is its village now."""
    targets, answers, responses = RoundTarget.__table__, Answer.__table__, Response.__table__
    moved_targets = (
        update(targets)
        .where(targets.c.household_id == bindparam("household"), targets.c.village_id != bindparam("village"))
        .values(village_id=bindparam("village"))
    )
    moved_answers = (
        update(answers)
        .where(
            answers.c.response_id.in_(
                select(responses.c.id)
                .join(targets, targets.c.id == responses.c.target_id)
                .where(targets.c.household_id == bindparam("household"))
            ),
            answers.c.village_id != bindparam("village"),
        )
        .values(village_id=bindparam("village"))
    )
    for chunk in _chunks(households, _WRITE_BATCH):
        params = [{"household": household_id, "village": village_id} for household_id, village_id in chunk]
        session.connection().execute(moved_targets, params)
        session.connection().execute(moved_answers, params)


def _village_ids(session: Session, names: Iterable[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in _chunks(list(names), _CHUNK):
        for name, village_id in session.execute(select(Village.name, Village.id).where(Village.name.in_(chunk))):
            found[name] = village_id
    return found


def _cadre_ids(session: Session, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    wanted = set(keys)
    found: dict[tuple[str, str], int] = {}
    for chunk in _chunks(sorted({name for name, _ in wanted}), _CHUNK):
        rows = session.execute(select(Cadre.name, Cadre.phone, Cadre.id).where(Cadre.name.in_(chunk)))
        for name, phone, cadre_id in rows:
            if (name, phone) in wanted:
                found[(name, phone)] = cadre_id
    return found


def _households(session: Session, phones: Sequence[str]) -> dict[str, tuple[int, str | None, int, int | None]]:
    """phone -> (id, name, village_id, cadre_id) for the numbers already in the database."""
    # The numbers are rendered into the SQL, not bound: psycopg prepares a statement it has run five times,
    # and PostgreSQL's generic plan for a 500-parameter IN list compares each row with every parameter in
    # turn (seconds per chunk on a freshly loaded, unanalysed table). Literal lists get a plan per chunk.
    # Safe: they are E.164 strings, "+" and digits only, validated by phonenumbers.
    phones_in: BindParameter[list[str]] = bindparam("phones", expanding=True, literal_execute=True)
    query = select(Household.phone, Household.id, Household.name, Household.village_id, Household.cadre_id).where(
        Household.phone.in_(phones_in)
    )
    found: dict[str, tuple[int, str | None, int, int | None]] = {}
    for chunk in _chunks(phones, _CHUNK):
        rows = session.execute(query, {"phones": list(chunk)})
        for phone, household_id, name, village_id, cadre_id in rows:
            found[phone] = (household_id, name, village_id, cadre_id)
    return found


def import_roster(
    session: Session,
    path: str | Path,
    *,
    dry_run: bool = False,
    skip_invalid: bool = False,
    replace: bool = False,
    limits: RosterLimits | None = None,
) -> ImportResult:
    """Import a roster file: create villages and cadres on demand, add new numbers, update changed ones.

    A known number (same E.164) whose village, cadre or household name differs is updated; numbers that
    are in the database but not in the file are left alone, unless ``replace`` says the file is the full
    roster: then they are retired (``retired_at``; never sampled again, their history kept), and retired
    numbers the file lists are restored. A number erased on request (``household forget``) that the file
    brings back is put on the do-not-call list in clear again, so it is still never called. A cadre is identified by (name, cadre phone or
    ""). When the file has no household column, existing household names are kept; when it has one, an
    empty cell clears the name. Does not commit.

    Args:
        session: the caller's session; the caller commits (or rolls back).
        path: the roster file (see :func:`read_roster` for the formats).
        dry_run: compute and return what would change, write nothing.
        skip_invalid: import the good rows and return the bad ones in ``ImportResult.skipped`` instead of
            raising.
        replace: the file is the full roster (see above); not with ``skip_invalid`` (a skipped row would
            retire its household).
        limits: how big the file may be (default RosterLimits()).

    Returns:
        The counts of what was (or would be) done.

    Raises:
        RosterError: the file is unreadable or its header is bad; or some rows are bad and ``skip_invalid``
            is false. Nothing has been written.
    """
    path = Path(path)
    source = path.name
    if replace and skip_invalid:
        raise RosterError(
            source,
            [RowProblem(0, "", source, "--replace 需要完整名单, 不能与 --skip-invalid 同用",
                        "--replace needs the full roster and cannot be combined with --skip-invalid")],
            kind="file",
        )  # fmt: skip
    rows, problems, total, has_household = read_roster(path, limits)
    if problems and not skip_invalid:
        raise RosterError(source, problems, kind="rows")

    # Plan against the database by key, so a dry run can report new villages and cadres without creating them.
    village_ids = _village_ids(session, dict.fromkeys(r.village for r in rows))
    cadre_keys = list(dict.fromkeys((r.cadre, r.cadre_phone) for r in rows))
    cadre_ids = _cadre_ids(session, cadre_keys)
    existing = _households(session, [r.phone for r in rows])

    new_villages = [name for name in dict.fromkeys(r.village for r in rows) if name not in village_ids]
    new_cadres = [key for key in cadre_keys if key not in cadre_ids]
    to_create: list[RosterRow] = []
    to_update: list[tuple[int, RosterRow]] = []
    for row in rows:
        known = existing.get(row.phone)
        if known is None:
            to_create.append(row)
            continue
        household_id, name, village_id, cadre_id = known
        # A village or cadre that does not exist yet has no id, so it never equals the current one.
        same = (
            village_ids.get(row.village) == village_id
            and cadre_ids.get((row.cadre, row.cadre_phone)) == cadre_id
            and (not has_household or row.household == name)
        )
        if not same:
            to_update.append((household_id, row))

    result = ImportResult(
        rows=total,
        created=len(to_create),
        updated=len(to_update),
        unchanged=len(rows) - len(to_create) - len(to_update),
        villages_created=len(new_villages),
        cadres_created=len(new_cadres),
        skipped=problems,
        source=source,
        replace=replace,
    )
    listed = {row.phone for row in rows}
    retire_ids: list[int] = []
    restore_ids: list[int] = []
    if replace:
        for household_id, phone, name, village, retired_at in session.execute(
            select(Household.id, Household.phone, Household.name, Village.name, Household.retired_at)
            .join(Village, Village.id == Household.village_id)
            .order_by(Village.name, Household.id)
        ):
            if phone not in listed and retired_at is None:
                retire_ids.append(household_id)
                result.retired.append(" ".join(part for part in (village, name, mask(phone)) if part))
            elif phone in listed and retired_at is not None:
                restore_ids.append(household_id)
        result.restored = len(restore_ids)
    forgotten = set(session.scalars(select(DoNotCall.phone_hash).where(DoNotCall.phone.is_(None))))
    relist = [row.phone for row in to_create if forgotten and phone_hash(session, row.phone) in forgotten]
    result.relisted = len(relist)
    if dry_run:
        return result
    if relist:
        session.execute(
            update(DoNotCall.__table__)
            .where(DoNotCall.phone_hash == bindparam("hash"))
            .values(phone=bindparam("number")),
            [{"hash": phone_hash(session, number), "number": number} for number in relist],
        )

    # Insert without RETURNING, then read the ids back: SQLite cannot promise RETURNING's row order, so the
    # ORM would fall back to one INSERT per village or cadre.
    for names in _chunks(new_villages, _WRITE_BATCH):
        session.execute(insert(Village), [{"name": name} for name in names])
    village_ids.update(_village_ids(session, new_villages))
    for keys in _chunks(new_cadres, _WRITE_BATCH):
        session.execute(insert(Cadre), [{"name": name, "phone": phone} for name, phone in keys])
    cadre_ids.update(_cadre_ids(session, new_cadres))

    for new_rows in _chunks(to_create, _WRITE_BATCH):
        session.execute(
            insert(Household),
            [
                {
                    "phone": row.phone,
                    "name": row.household,
                    "village_id": village_ids[row.village],
                    "cadre_id": cadre_ids[(row.cadre, row.cadre_phone)],
                }
                for row in new_rows
            ],
        )
    now = utcnow()
    for changes in _chunks(to_update, _WRITE_BATCH):
        params: list[dict[str, Any]] = []
        for household_id, row in changes:
            values: dict[str, Any] = {
                "id": household_id,
                "village_id": village_ids[row.village],
                "cadre_id": cadre_ids[(row.cadre, row.cadre_phone)],
                "updated_at": now,
            }
            if has_household:
                values["name"] = row.household
            params.append(values)
        session.execute(update(Household), params)
    _move_round_figures(
        session,
        [
            (household_id, village_ids[row.village])
            for household_id, row in to_update
            if village_ids[row.village] != existing[row.phone][2]
        ],
    )
    now = utcnow()
    for ids in _chunks(retire_ids, _WRITE_BATCH):
        session.execute(update(Household).where(Household.id.in_(ids)).values(retired_at=now, updated_at=now))
    for ids in _chunks(restore_ids, _WRITE_BATCH):
        session.execute(update(Household).where(Household.id.in_(ids)).values(retired_at=None, updated_at=now))
    if to_update:
        # Bulk UPDATE by primary key bypasses the identity map; households the caller already loaded would
        # otherwise show their old village and cadre until the session ends.
        updated_ids = {household_id for household_id, _ in to_update}
        for obj in list(session.identity_map.values()):
            if (isinstance(obj, Household) and obj.id in updated_ids) or (
                isinstance(obj, RoundTarget) and obj.household_id in updated_ids
            ):
                session.expire(obj)
    return result


def read_cells(path: str | Path, limits: RosterLimits | None = None) -> list[tuple[int, list[str]]]:
    """Every non-empty row of a CSV (UTF-8, UTF-8 with BOM, GBK) or XLSX file as (line, cells as text).

    The same reading rules and limits as a roster (encodings, delimiters, Excel's numbers; file size, unpacked
    size, rows), for other lists the office keeps in spreadsheets (``sanlv dnc import``). Raises RosterError
    (kind ``file``) for an unreadable file or one over a limit of ``limits`` (default RosterLimits()).
    """
    path = Path(path)
    limits = limits or RosterLimits()
    rows: list[tuple[int, list[str]]] = []
    for line, cells in _read_sheet(path, path.name, limits):
        if len(rows) > limits.max_rows:  # the header row and max_rows data rows are allowed
            raise _file_problem(
                path.name,
                f"行数超过上限 {limits.max_rows} 行 (SANLV_ROSTER_MAX_ROWS, 第{line}行); 请分成几个文件导入",
                f"more than {limits.max_rows} rows, the limit (SANLV_ROSTER_MAX_ROWS; line {line});"
                " split it into several files",
            )
        texts = [_cell_text(cell) for cell in cells]
        if any(texts):
            rows.append((line, texts))
    return rows
