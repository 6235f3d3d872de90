"""The on-disk spool: ordered, bounded (oldest dropped and counted), crash-safe."""

from pathlib import Path

from agents.spool import Spool


def beat(seq: int) -> dict[str, object]:
    return {"seq": seq, "telemetry": [{"uuid": "GPU-1", "temperature_c": 30 + seq}]}


def test_oldest_first_and_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_entries=10)
    for seq in (3, 1, 2):
        spool.append(beat(seq))
    assert spool.oldest() == beat(1)
    spool.remove(1)
    reopened = Spool(tmp_path, max_entries=10)
    assert len(reopened) == 2
    assert reopened.oldest() == beat(2)


def test_full_spool_drops_the_oldest_and_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_entries=3)
    dropped = [spool.append(beat(seq)) for seq in range(1, 6)]
    assert dropped == [0, 0, 0, 1, 1]
    assert len(spool) == 3
    assert spool.oldest() == beat(3)
    assert sorted(p.name for p in tmp_path.iterdir())[0].startswith("0" * 19 + "3")


def test_interrupted_writes_and_damaged_files_do_not_stall_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_entries=10)
    spool.append(beat(1))
    spool.append(beat(2))
    (tmp_path / f"{1:020d}.json").write_text("{trunc")
    (tmp_path / "00000000000000000009.tmp").write_text("half")
    reopened = Spool(tmp_path, max_entries=10)
    assert not list(tmp_path.glob("*.tmp"))
    assert reopened.oldest() == beat(2)


def test_newest_and_holds(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_entries=10)
    assert spool.newest_seq() == 0
    spool.append(beat(4))
    spool.append(beat(9))
    assert spool.newest_seq() == 9
    assert spool.holds(4)
    spool.remove(4)
    assert not spool.holds(4)
