"""The exit codes of every `sift` command, in one place: the commands raise them, `docs/cli-exit-codes.md`
documents them, and `tests/test_cli_exit_codes.py` checks that the two agree.

Scripts and schedulers (a CronJob, a CI step) branch on these, so a code means the same in every command.
"""

from __future__ import annotations

OK = 0
FAILED = 1
USAGE = 2
GATE_REFUSED = 3

EXIT_CODES: dict[int, str] = {
    OK: "success",
    FAILED: "the operation failed or was refused by the system's state (store unreachable, lock held, nothing to "
    "learn from, not promoted, rollback target not servable); nothing was changed unless the message says so",
    USAGE: "bad usage or input (unknown option or value, missing file, invalid config); nothing was done",
    GATE_REFUSED: "the quality gate refused the new index version (`sift index`, `sift reindex`): the alias stays",
}
