"""The CLI's error contract, asserted alike by every test file: bad input exits 2 (a run-time fault
1) with exactly one line on stderr, `rgdiff: error: ...`, and no traceback.

(tests/ is on sys.path through its conftest.py, so test files import this as `cli_errors`.)"""

import contextlib
import io

from rgdiff.cli.app import main


def run_cli(args) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `rgdiff ARGS`, in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def error_line(code: int | None, err: str, *fragments: str, expected: int | None = 2) -> str:
    """The single `rgdiff: error:` line of `err`, after checking the exit code (unless `expected`
    is None) and that the line holds every fragment."""
    lines = err.strip().splitlines()
    assert expected is None or code == expected, (code, err)
    assert len(lines) == 1 and lines[0].startswith("rgdiff: error:"), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def fails(capsys, args, *fragments: str, expected: int = 2) -> str:
    """`rgdiff ARGS` (through pytest's captured stderr) exits `expected` with one error line
    holding every fragment; returns the line."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    return error_line(code, capsys.readouterr().err, *fragments, expected=expected)
