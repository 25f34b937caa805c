"""Figure and table builders: what a user typed stays text."""
import re

from explorer.figures import markdown_table


def cells(line: str) -> list[str]:
    """A markdown table row's cells as CommonMark reads them: split on unescaped pipes, then every
    backslash-escaped punctuation character taken literally."""
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", p.strip()) for p in parts]


def test_a_markdown_table_shows_typed_text_as_typed_and_formats_numbers():
    typed = "a | b *c* <script>x</script> [l](http://e) `t`"
    rows = [{"text": typed, "count": 12345, "share": 0.123456, "big": 1234.56, "none": None, "flag": True,
             "shown": "2.33"},
            {"text": "two\nlines", "count": 3, "share": 2.0, "big": float("nan"), "none": None, "flag": False,
             "shown": "—"}]
    lines = markdown_table(rows).split("\n")
    assert cells(lines[0]) == list(rows[0])
    assert cells(lines[1]) == ["---", "---:", "---:", "---:", "---:", "---", "---:"]  # numbers right-aligned
    assert cells(lines[2]) == [typed, "12,345", "0.1235", "1,234.6", "—", "yes", "2.33"]
    assert cells(lines[3]) == ["two lines", "3", "2", "—", "—", "no", "—"]
    assert "<script>" not in markdown_table(rows) and "](" not in markdown_table(rows)  # never markup
    assert len(lines) == 4 and markdown_table([]) == ""
