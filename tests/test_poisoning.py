"""The poisoning benchmark's logic, small: one key at one address replaying searches and clicks moves a
click-model judgment no further than one honest user's click does (`bench/poisoning.py`)."""

from __future__ import annotations

from pathlib import Path

from bench.poisoning import run


def test_an_attack_moves_a_judgment_no_more_than_one_honest_click(tmp_path: Path) -> None:
    result = run(users=6, attacks=[1, 30], seed=0, work=tmp_path)
    rows = result["rows"]
    assert result["honest_move"] > 0.01  # one honest click is visible in the judgment
    assert result["passed"], result
    attack = rows["attack 30"]
    # The attack is real: read as if the defences were off, it outweighs the honest click many times over.
    assert attack["undefended"] - rows["honest"]["judgment"] > 2 * result["honest_move"]
    assert attack["flagged"] > 30 and attack["stored"] - rows["honest"]["stored"] == 30 + 30
