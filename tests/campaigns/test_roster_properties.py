"""Properties of reading a roster, without a database: whatever the encoding and padding, names survive."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from campaigns.roster import read_roster

# Every character of the CJK Unified Ideographs basic block up to U+9FA5 is in GBK.
cjk = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5)
names = st.text(cjk, min_size=1, max_size=6)
padding = st.text(st.sampled_from(" \u3000\t"), max_size=2)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(names, names, names), min_size=1, max_size=8),
    encoding=st.sampled_from(["gbk", "gb18030", "utf-8", "utf-8-sig"]),
    pad=padding,
)
def test_names_survive_any_supported_encoding_and_padding(
    rows: list[tuple[str, str, str]], encoding: str, pad: str
) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["村", "户主", "电话", "包户干部"])
    for i, (village, household, cadre) in enumerate(rows):
        writer.writerow([pad + village + pad, household + pad, f"138{i:08d}", pad + cadre])
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "r.csv"
        path.write_bytes(buffer.getvalue().encode(encoding))

        good, problems, total, has_household = read_roster(path)

    assert (problems, total, has_household) == ([], len(rows), True)
    assert [(r.village, r.household, r.cadre) for r in good] == rows
    assert [r.phone for r in good] == [f"+86138{i:08d}" for i in range(len(rows))]
