"""The results history: round trip, run references, schema versions, and surviving a killed writer."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgepack.results import store as st
from edgepack.results.store import ResultsError, open_store
from tests.results.conftest import add_run, agent_report, manifest

REPO = Path(__file__).resolve().parents[2]


def test_history_round_trip_keeps_the_whole_report_and_the_manifest_summary(db):
    report = agent_report([1.0, 1.1, 1.2, 1.3, 5.0], peak_mb=61.5)
    with open_store(db) as history:
        run_id = history.add(
            device="pi4", manifest=manifest(target="pi-fp16", precision="fp16", model_bytes=81_000), report=report,
            bundle_sha="cd" * 32, bundle_path="/b/pi-fp16", budget_failures=["p90 latency 9 ms is over the budget of 5 ms"],
            seconds={"total": 4.2},
        )
    with open_store(db) as history:
        run = history.get(run_id)
    assert run.label == f"#{run_id}" and run.device == "pi4" and run.target == "pi-fp16"
    assert (run.format, run.precision, run.bundle_sha256, run.bundle_path) == ("tflite", "fp16", "cd" * 32, "/b/pi-fp16")
    assert run.report == report and run.report.latency_ms.samples == [1.0, 1.1, 1.2, 1.3, 5.0]
    assert run.model_bytes == 81_000 and run.accuracy == 0.947 and run.peak_mb == 61.5
    assert run.manifest["tools"] == {"tensorflow": "2.21.0"} and run.manifest["budgets"]["max_p90_latency_ms"] == 50
    assert not run.passed and run.budget_failures == ["p90 latency 9 ms is over the budget of 5 ms"]
    assert run.seconds == {"total": 4.2} and run.edgepack_version == "0.1.0" and run.created.endswith("+00:00")


def test_runs_are_listed_oldest_first_and_filtered(db):
    with open_store(db) as history:
        ids = [add_run(history, device=d, target=t) for d, t in [("pi4", "a"), ("orin", "b"), ("pi4", "b"), ("pi4", "a")]]
        assert [r.id for r in history.runs()] == ids
        assert [r.id for r in history.runs(last=2)] == ids[2:]
        assert [r.id for r in history.runs(target="b")] == [ids[1], ids[2]]
        assert [r.id for r in history.runs(device="pi4", target="a")] == [ids[0], ids[3]]
        assert history.count() == 4


def test_runs_are_named_by_id_hash_id_last_and_last_tilde_n(db):
    with open_store(db) as history:
        ids = [add_run(history, seed=i) for i in range(3)]
        assert history.resolve(str(ids[0])).id == ids[0]
        assert history.resolve(f"#{ids[1]}").id == ids[1]
        assert history.resolve("last").id == ids[2]
        assert history.resolve("last~2").id == ids[0]
        with pytest.raises(ResultsError, match="'last~3' names no run: .* holds 3 runs"):
            history.resolve("last~3")
        with pytest.raises(ResultsError, match=r"no run #99 in") as exc:
            history.resolve("#99")
        assert "edgepack report" in exc.value.hint and exc.value.exit_code == 2
        with pytest.raises(ResultsError, match="'yesterday' is not a run: use a run id such as #12"):
            history.resolve("yesterday")


def test_the_default_history_lives_in_the_user_data_dir(isolated_user_dirs):
    with open_store() as history:
        add_run(history)
    path = Path(os.environ["XDG_DATA_HOME"]) / "edgepack" / "history.sqlite3"
    assert st.default_db_path() == path and path.is_file()


def test_a_new_history_has_the_current_schema_version_and_wal(db):
    with open_store(db) as history:
        assert history.version() == st.schema_version() >= 1
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == st.schema_version()


def test_many_writers_creating_the_history_at_once_lose_nothing(db):
    import threading

    barrier, ids, errors = threading.Barrier(8), [], []

    def writer(seed):
        try:
            barrier.wait()
            with open_store(db) as history:  # all eight find no history and create it together
                ids.append(add_run(history, seed=seed))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open_store(db) as history:
        assert sorted(r.id for r in history.runs()) == sorted(ids) and len(ids) == 8


def test_a_history_from_a_newer_edgepack_is_refused(db):
    with open_store(db) as history:
        add_run(history)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(ResultsError, match="schema version 99; this edgepack knows up to") as exc:
        open_store(db)
    assert "newer edgepack" in exc.value.hint


def test_migrations_run_forward_and_keep_every_run(db, monkeypatch):
    with open_store(db) as history:
        first = add_run(history, seed=1)
        second = add_run(history, seed=2)
        assert history.version() == len(st.MIGRATIONS)

    def add_note_column(conn):  # what a later schema version might do
        conn.execute("ALTER TABLE runs ADD COLUMN note TEXT DEFAULT ''")

    monkeypatch.setattr(st, "MIGRATIONS", [*st.MIGRATIONS, add_note_column])
    with open_store(db) as history:
        assert history.version() == len(st.MIGRATIONS)
        assert [r.id for r in history.runs()] == [first, second]
        assert history.resolve("last").report.latency_ms.samples == history.get(second).report.latency_ms.samples
    columns = [row[1] for row in sqlite3.connect(db).execute("PRAGMA table_info(runs)")]
    assert "note" in columns


def test_a_file_that_is_not_a_history_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a database, just some text that is long enough to look like a header" * 20)
    with pytest.raises(ResultsError, match="not a results history edgepack can read") as exc:
        open_store(bad)
    assert "--db FILE" in exc.value.hint


# A writer that is killed after its INSERT and before its COMMIT: the middle of `ResultStore.add`.
KILLED_WRITER = textwrap.dedent(
    """
    import contextlib, sys, time
    sys.path.insert(0, sys.argv[2])
    from edgepack.results.store import ResultStore
    from tests.results.conftest import add_run

    class StopsBeforeCommit(ResultStore):
        @contextlib.contextmanager
        def _transaction(self):
            with super()._transaction() as conn:
                yield conn
                print("inserted, not committed", flush=True)
                time.sleep(120)

    with StopsBeforeCommit(sys.argv[1]) as history:
        add_run(history, seed=42, device="half-written")
    """
)


def test_a_run_killed_in_the_middle_of_a_write_keeps_every_earlier_result(db):
    with open_store(db) as history:
        earlier = [add_run(history, seed=i) for i in range(3)]
        samples = [history.get(i).report.latency_ms.samples for i in earlier]
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(db), str(REPO)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "inserted, not committed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with open_store(db) as history:
        runs = history.runs()
        assert [r.id for r in runs] == earlier and all(r.device == "pi4" for r in runs)
        assert [r.report.latency_ms.samples for r in runs] == samples
        assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        later = add_run(history, seed=7)  # and the history takes new runs
        assert history.resolve("last").id == later


@pytest.mark.slow
def test_every_real_bench_is_stored_with_its_run_id(digits_bundles, tmp_path):
    from edgepack.benchmark import BenchOptions, bench
    from edgepack.bundle import bundle_sha256

    db = tmp_path / "h.sqlite3"
    options = BenchOptions(runs=20, warmup=2, min_seconds=0, cold_loads=1)
    first = bench(digits_bundles["fp32"], "local", options, db=db)
    second = bench(digits_bundles["int8"], "local", options, db=db)
    unstored = bench(digits_bundles["int8"], "local", options, db=db, store=False)
    assert unstored.run_id is None
    with open_store(db) as history:
        runs = history.runs()
    assert [r.id for r in runs] == [first.run_id, second.run_id]
    stored = runs[0]
    assert stored.report == first.report and stored.device == "local" and stored.precision == "fp32"
    assert stored.bundle_sha256 == bundle_sha256(digits_bundles["fp32"])
    assert stored.model_bytes == next(f.bytes for f in first.manifest.files if f.path == "model.tflite")
    assert stored.bundle_path == str(digits_bundles["fp32"].resolve())
    assert runs[1].target == "pi-int8" and runs[1].report.latency_ms.p90 == second.report.latency_ms.p90


def test_a_stored_report_this_version_cannot_read_is_a_clear_error(db):
    with open_store(db) as history:
        run_id = add_run(history)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE runs SET report = json_remove(report, '$.memory.method') WHERE id = ?", (run_id,))
    conn.commit()
    conn.close()
    with open_store(db) as history, pytest.raises(ResultsError, match=f"run #{run_id} in .* was stored by edgepack 0.1.0") as exc:
        history.get(run_id)
    assert "--last" in exc.value.hint


def test_a_version_1_history_gains_the_trial_column_and_keeps_its_runs(db):
    # A history written before `edgepack tune` existed: schema version 1, no trial column.
    conn = sqlite3.connect(db)
    st.MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with open_store(db) as history:
        assert history.version() == st.schema_version() == 2
        old = add_run(history)
        tuned = add_run(history, trial={"study": "s", "number": 3})
        runs = {r.id: r for r in history.runs()}
    assert runs[old].trial is None and runs[tuned].trial == {"study": "s", "number": 3}
