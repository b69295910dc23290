"""Where the builds of `edgepack tune` run: in this process, in a pool of local processes, or on a Ray cluster.

A trial's build is a `BuildJob`: the trial's settings as two self-contained profiles (the target
resolved, and the trial extending it), so any process on any machine builds the same bundle. It
comes back as a `BuildOutcome`: the bundle's directory here, and what the build measured (size,
fidelity, the precision recovery ended at). Benches are never run here: the study runs them one
at a time from the driver, because benches on one device would disturb each other's timings.

Every runner has `submit(job) -> concurrent.futures.Future[BuildOutcome]` and `close(wait)`:

- `InlineBuilds` builds in this process (one worker: nothing to gain from another process);
- `PoolBuilds` builds up to K at once, each in a fresh Python process (TensorFlow is not fork-safe);
- `RayBuilds` builds as Ray tasks on an existing cluster: the model and data travel once through
  Ray's object store, the bundle comes back as its files and is written under the study's workdir.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from edgepack.errors import EdgepackError

# The bytes a Ray task may send back: a bundle is the model and a few small files.
MAX_BUNDLE_BYTES = 2 << 30


@dataclass(frozen=True)
class BuildInputs:
    """The files every trial builds from."""

    model: Path
    data: Optional[Path] = None
    eval_data: Optional[Path] = None
    train_data: Optional[Path] = None


@dataclass(frozen=True)
class BuildJob:
    number: int
    trial_name: str
    profiles: dict[str, str]  # file name -> YAML: the resolved target, and the trial's profile extending it
    out: Path  # where the bundle ends up on this machine


@dataclass
class BuildOutcome:
    number: int
    bundle: Optional[str] = None
    passed: bool = False
    failures: list[str] = field(default_factory=list)  # the gate's, or the error that stopped the build
    error: bool = False  # the build itself failed (no bundle)
    values: dict[str, Optional[float]] = field(default_factory=dict)  # size_kb, accuracy, top1_agreement
    built: dict[str, Any] = field(default_factory=dict)  # precision, sparsity, node (where it ran, on Ray)


def trial_profiles(target_profile, trial_name: str, sections: dict[str, Any]) -> dict[str, str]:
    """The two profile files of a trial: TARGET_PROFILE resolved (no `extends`) and the trial's extending it with SECTIONS
    (`edgepack.tuning.space.trial_settings`: build, and runtime where runtime settings are searched)."""
    from ruamel.yaml import YAML

    base = target_profile.model_dump(mode="json", exclude_unset=True)
    base.pop("extends", None)
    files = {}
    for name, doc in ((target_profile.name, base), (trial_name, {"name": trial_name, "extends": target_profile.name, **sections})):
        buf = io.StringIO()
        YAML(typ="safe").dump(doc, buf)
        files[f"{name}.yaml"] = buf.getvalue()
    return files


def build_trial(job: BuildJob, inputs: BuildInputs, profiles_dir: Path) -> BuildOutcome:
    """Build JOB from INPUTS into JOB.out (its profiles written to PROFILES_DIR); never raises for a failed build."""
    import time

    from edgepack.builder.pipeline import build
    from edgepack.profile.store import Catalog, SearchDir

    outcome = BuildOutcome(job.number)
    started = time.time()
    try:
        profiles_dir.mkdir(parents=True, exist_ok=True)
        for name, text in job.profiles.items():
            (profiles_dir / name).write_text(text)
    except OSError as exc:
        outcome.error, outcome.failures = True, [f"cannot write the trial's profiles in {profiles_dir}: {exc.strerror or exc}"]
        return outcome
    try:
        built = build(inputs.model, job.trial_name, inputs.data, inputs.eval_data, out=job.out,
                      catalog=Catalog([SearchDir("tune", profiles_dir)]), train_data=inputs.train_data)
    except EdgepackError as exc:
        outcome.error, outcome.failures = True, [exc.message]
        return outcome
    except Exception as exc:  # a bug or a library's error in one trial: recorded, and the study goes on
        outcome.error, outcome.failures = True, [f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"]
        return outcome
    f = built.manifest.fidelity
    outcome.bundle, outcome.passed, outcome.failures = str(built.bundle), built.passed, list(built.failures)
    outcome.values = {"size_kb": built.size_bytes / 1024, "accuracy": f.accuracy_artifact, "top1_agreement": f.top1_agreement}
    outcome.built = {"precision": built.manifest.precision.value,
                     "sparsity": (built.manifest.build.get("prune_result") or {}).get("sparsity"),
                     "worker": f"{socket.gethostname()}:{os.getpid()}",  # which process built it, and when
                     "started": started, "finished": time.time()}
    return outcome


class InlineBuilds:
    """Build each job in this process, as it is submitted."""

    workers = 1

    def __init__(self, inputs: BuildInputs, profiles_dir: Path):
        self.inputs, self.profiles_dir = inputs, profiles_dir

    def submit(self, job: BuildJob) -> cf.Future:
        future: cf.Future = cf.Future()
        future.set_result(build_trial(job, self.inputs, self.profiles_dir))
        return future

    def close(self, wait: bool = True) -> None:
        pass


class PoolBuilds:
    """Build up to WORKERS jobs at once, each in a fresh `python -m edgepack.tuning.builds` process.

    A process of our own rather than a multiprocessing pool: spawned pool workers import the
    caller's main script again, so a user's script calling `edgepack.tune(workers=2)` without a
    `__main__` guard would run itself once per worker. A build that dies fails its trial only.
    """

    def __init__(self, inputs: BuildInputs, profiles_dir: Path, workers: int):
        self.inputs, self.profiles_dir, self.workers = inputs, profiles_dir, workers
        self.pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgepack-build")

    def submit(self, job: BuildJob) -> cf.Future:
        # Each trial its own profiles directory: two processes never write the same file.
        return self.pool.submit(_build_in_a_process, job, self.inputs, self.profiles_dir / f"trial-{job.number}")

    def close(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)


def _build_in_a_process(job: BuildJob, inputs: BuildInputs, profiles_dir: Path) -> BuildOutcome:
    """Run `build_trial` in a new Python process (this module's main); its outcome comes back through a file."""
    import pickle
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgepack-build-") as tmp:
        result = Path(tmp) / "outcome.pickle"
        proc = subprocess.run([sys.executable, "-m", "edgepack.tuning.builds", str(result)], input=pickle.dumps((job, inputs, profiles_dir)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode != 0 or not result.exists():
            said = [line for line in proc.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
            return BuildOutcome(job.number, error=True,
                                failures=[f"the build process exited with {proc.returncode}" + (f": {said[-1][:200]}" if said else "")])
        return pickle.loads(result.read_bytes())  # written by this module, in the process just run


def _files_of(path: Path) -> dict[str, bytes]:
    """The files under PATH (or PATH itself) as {relative path: bytes}."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, blob in files.items():
        target = (root / rel).resolve()
        if root.resolve() not in target.parents:
            raise EdgepackError(f"a build sent back a file outside its bundle: {rel}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)


def _remote_build(job: BuildJob, packed: dict[str, Any]) -> tuple[BuildOutcome, dict[str, bytes]]:
    """Run on a Ray worker: unpack the inputs into a temporary directory, build, send the bundle back as files."""
    import tempfile

    import ray

    with tempfile.TemporaryDirectory(prefix="edgepack-tune-") as tmp:
        root = Path(tmp)
        paths = {}
        for key, entry in packed.items():
            if entry is None:
                paths[key] = None
                continue
            name, is_dir, files = entry  # a file is {name: bytes}; a directory (SavedModel, image folder) its files under NAME
            _write_files(root / key / name if is_dir else root / key, files)
            paths[key] = root / key / name
        local_job = BuildJob(job.number, job.trial_name, job.profiles, root / "bundle")
        outcome = build_trial(local_job, BuildInputs(**paths), root / "targets")
        outcome.built["node"] = ray.get_runtime_context().get_node_id()
        files = _files_of(Path(outcome.bundle)) if outcome.bundle else {}
        if sum(len(b) for b in files.values()) > MAX_BUNDLE_BYTES:
            return BuildOutcome(job.number, error=True, failures=["the bundle is too large to send back from the Ray worker"]), {}
        return outcome, files


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # the client preface, then an empty SETTINGS frame
RAY_HINT = "start one with `ray start --head` and pass its address (host:port), or drop --ray"


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a Ray ADDRESS that is not HOST:PORT, where nothing answers, or where what answers is not Ray, within seconds.

    Ray's head answers in gRPC (HTTP/2): to the HTTP/2 client preface it sends its SETTINGS frame.
    Anything else (an SSH server's banner, an HTTP/1 reply, silence) is not Ray: `ray.init` would
    wait many minutes there before it gave up.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EdgepackError(f"--ray {address}: not a Ray address", hint="give the head node's HOST:PORT, e.g. --ray 10.0.0.5:6379")
    try:
        conn = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s)
    except OSError as exc:
        raise EdgepackError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}", hint=RAY_HINT) from None
    with conn:
        conn.settimeout(0.5)
        try:
            first = conn.recv(64)  # a server that speaks first (SSH, SMTP, FTP) is not Ray
        except (socket.timeout, OSError):
            first = b""
        if len(first) >= 4 and first[3] == 4:  # an HTTP/2 server that sent its SETTINGS first
            return
        if not first:
            conn.settimeout(timeout_s)
            try:
                conn.sendall(HTTP2_PREFACE)
                first = conn.recv(9)
            except (socket.timeout, OSError):
                first = b""
            if len(first) >= 4 and first[3] == 4:  # a SETTINGS frame: an HTTP/2 server, as Ray's head is
                return
    said = first.decode("ascii", "replace").strip().splitlines()[0][:60] if first.strip() else ""
    raise EdgepackError(
        f"--ray {address}: what answers there is not a Ray cluster" + (f" (it said {said!r})" if said else " (no HTTP/2 answer)"),
        hint=RAY_HINT,
    )


class RayBuilds:
    """Build up to WORKERS jobs at once as Ray tasks on the cluster at ADDRESS; each bundle is written to its job's `out`."""

    def __init__(self, inputs: BuildInputs, address: str, workers: int):
        try:
            import ray
        except ImportError:
            raise EdgepackError("--ray needs Ray, which is not installed", hint="pip install 'edgepack[ray]'") from None
        self.workers = workers
        check_ray_address(address)  # ray.init waits many minutes at an address where nothing, or not Ray, answers
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
        except Exception as exc:  # ConnectionError, ValueError for a malformed address, RuntimeError, ...
            raise EdgepackError(
                f"cannot join the Ray cluster at {address}: {(str(exc).splitlines() or [type(exc).__name__])[0][:200]}",
                hint="start one with `ray start --head` and pass its address (host:port), or drop --ray",
            ) from None
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < 1:
            ray.shutdown()
            raise EdgepackError(f"the Ray cluster at {address} has no CPU to build on",
                                hint="add a worker node (`ray start --address ...`), or drop --ray")
        packed = {key: (None if p is None else (Path(p).name, Path(p).is_dir(), _files_of(Path(p))))
                  for key, p in vars(inputs).items()}
        self.inputs_ref = ray.put(packed)  # sent once; every task reads it from the object store
        self.task = ray.remote(num_cpus=1, max_retries=0)(_remote_build)

    def submit(self, job: BuildJob) -> cf.Future:
        done: cf.Future = cf.Future()

        def arrived(future: cf.Future) -> None:
            try:
                outcome, files = future.result()
                if outcome.bundle:
                    from edgepack.atomic import replacing_dir
                    from edgepack.bundle import check_replaceable

                    try:
                        check_replaceable(job.out)  # as a local build does: a folder holding a user's files is never replaced
                    except EdgepackError as exc:
                        done.set_result(BuildOutcome(job.number, error=True, failures=[exc.message]))
                        return
                    with replacing_dir(job.out, "the trial's bundle") as fill:
                        _write_files(fill, files)
                    outcome.bundle = str(job.out)
                done.set_result(outcome)
            except BaseException as exc:
                done.set_exception(exc)

        self.task.remote(job, self.inputs_ref).future().add_done_callback(arrived)
        return done

    def close(self, wait: bool = True) -> None:
        import ray

        ray.shutdown()  # tasks of this driver still running are cancelled with it


def exit_with_parent(poll_s: float = 0.2) -> None:
    """End this process as soon as its parent is gone (killed, say): a build nobody waits for writes nothing more."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="edgepack-exit-with-parent", daemon=True).start()


if __name__ == "__main__":  # one trial's build, for PoolBuilds: the job on stdin, the outcome to the file named
    import pickle
    import sys

    from edgepack.tuning import builds  # the module's own classes, not __main__'s copies: the parent unpickles them

    builds.exit_with_parent()  # a tune killed with SIGKILL leaves no build behind still writing its bundle

    job, inputs, profiles_dir = pickle.loads(sys.stdin.buffer.read())
    Path(sys.argv[1]).write_bytes(pickle.dumps(builds.build_trial(job, inputs, profiles_dir)))
