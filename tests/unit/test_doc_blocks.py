"""How the docs test reads command blocks and compares their output (tests/doc_blocks.py)."""

from __future__ import annotations

import pytest

from tests.doc_blocks import DocError, parse, same_output

DOC = """# Title

```console
$ tice-collector school add 0210001A --name "École" \\
    --zone A --kind nursery
school 0210001A added
$ cat > batch.json <<EOF
{"device_id": "$DEVICE",
 "at": "$NOW"}
EOF
$ TICE_POOL_MAX_SIZE=0 tice-collector serve
tice-collector: settings error: pool_max_size: Expected `int` >= 1
$ echo $?
2
```

<!-- not run: a production address -->
```sh
tice-agent enroll --server https://telemetry.example.org --secret - < secret.txt
```

Some prose: a marker applies to the block right after it only.

```sh
# a comment
tice-agent status
curl -s localhost:8080/readyz \\
    -o /dev/null
```

<!-- output varies: the machine's sensors -->
```console
$ tice-agent once
{"type":"usage"}
```

```json
{"device_id": "x"}
```
"""


def test_blocks_languages_and_markers() -> None:
    blocks = parse(DOC, "doc.md")
    assert [(b.line, b.lang, b.not_run, b.output_varies, b.runs) for b in blocks] == [
        (3, "console", None, None, True),
        (18, "sh", "a production address", None, False),
        (24, "sh", None, None, True),
        (32, "console", None, "the machine's sensors", True),
        (37, "json", None, None, False),
    ]


def test_console_commands_continuations_heredocs_and_expected_failures() -> None:
    cmds = parse(DOC, "doc.md")[0].commands()
    assert [(c.line, c.text, c.expected, c.check_exit) for c in cmds] == [
        (4, 'tice-collector school add 0210001A --name "École" \\\n    --zone A --kind nursery',
         ["school 0210001A added"], True),
        (7, 'cat > batch.json <<EOF\n{"device_id": "$DEVICE",\n "at": "$NOW"}\nEOF', [], True),
        (11, "TICE_POOL_MAX_SIZE=0 tice-collector serve",
         ["tice-collector: settings error: pool_max_size: Expected `int` >= 1"], False),  # `echo $?` follows
        (13, "echo $?", ["2"], True),
    ]


def test_sh_commands_skip_comments_and_join_continuations() -> None:
    cmds = parse(DOC, "doc.md")[2].commands()
    assert [(c.line, c.text) for c in cmds] == [
        (26, "tice-agent status"),
        (27, "curl -s localhost:8080/readyz \\\n    -o /dev/null"),
    ]


@pytest.mark.parametrize(("text", "message"), [
    ("```\nls\n```\n", "doc.md:1: a fenced block without a language"),
    ("```sh\nls\n", "doc.md:1: the block is never closed"),
    ("```console\noutput\n$ ls\n```\n", "doc.md:2: output before any `$ command` line"),
    ("```console\n$ cat > f <<EOF\nx\n```\n", "doc.md:2: a here-document never ends (no line `EOF`)"),
])
def test_broken_markdown_is_named(text: str, message: str) -> None:
    with pytest.raises(DocError) as e:
        parse(text, "doc.md")[0].commands()
    assert message in str(e.value)


def test_what_varies_is_masked_and_nothing_else() -> None:
    doc = ['{"device_id":"040d07af-fa0e-47fa-b877-1e1f3f35e880","token":"tice_dev_7xdok6_83Ov2eycDnfSD7mlswuUGCEHmk"}',
           "snapshot: ok in 0.08 s: 3 devices, 1 schools",
           "2026-11-28T14:20:45.502Z INFO    tice.app: migrations applied: 0001_init, 0002_analytics",
           "daemon:         running (pid 22047)",
           "last success:   2026-11-28T15:14:10+00:00 (1 s ago)"]
    real = ['{"device_id":"9dde1473-bdf3-4206-a2a9-bdff21db07e3","token":"tice_dev_Zq0f3Yl2o0qk1ZPqg2hO5dVYbqkJ8xWm-x"}',
            "snapshot: ok in 1.25 s: 3 devices, 1 schools",
            "2026-12-01T08:00:00.001Z INFO    tice.app: migrations applied: 0001_init, 0002_analytics, 0003_more",
            "daemon:         running (pid 7)",
            "last success:   2026-12-01T08:00:00+00:00 (42 s ago)"]
    assert same_output(doc, real)
    assert same_output(doc, [*real, ""])  # a final empty line is no difference
    for i, changed in [(1, "snapshot: ok in 1.25 s: 4 devices, 1 schools"),
                       (3, "daemon:         not running"),
                       (0, real[0].replace("token", "secret"))]:
        assert not same_output(doc, [*real[:i], changed, *real[i + 1:]]), changed
    assert not same_output(doc, real[:-1])  # a missing line
