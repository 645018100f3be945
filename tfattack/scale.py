"""Crafting on a Ray cluster: the batches of one run spread over long-lived worker processes, on one machine or many.

    from tfattack import data, scale
    ensemble = scale.EnsembleRecipe([("efficientnet_lite0", 1.0)])
    attack = scale.AttackRecipe("mi_fgsm", {"eps": 16 / 255, "steps": 10})
    summary = scale.attack_dataset(data.read_dataset("images/"), "out/", ensemble, attack, batch_size=10,
                                   targeted=False, engine="ray", num_workers=4)

or `tfattack-attack ... --engine=ray [--ray_address=auto|HOST:PORT] [--num_workers=N] [--worker_gpus=G]
[--worker_cpus=C]`. Without an address, an embedded Ray is started on this machine and shut down at the end; with
one, the run joins that cluster (`auto`: the one `ray start` left on this machine) and leaves it running.

How a run goes:
  - The driver (this process) plans the run exactly as a local one (`tfattack.pipeline.attack_dataset`): which images
    still need doing, the batches (same size, same grouping, same order of submission), the record's settings.
  - Each worker is a Ray actor that builds the surrogate ensemble and the attack once, from picklable recipes, and
    then crafts whole batches: the same `pipeline.craft_batch` a local run calls, with the whole attack loop in one
    tf.function. An attack resets its generator from its seed at every call, so a batch's images depend only on the
    batch and the settings: a Ray run writes byte-identical PNGs to a local run with the same seed and batch size,
    provided TensorFlow runs the same kernels in both (oneDNN rewrites off, `TF_ENABLE_ONEDNN_OPTS=0`, which the
    workers inherit from the driver; op determinism, which they take over when the driver has it on; and the same
    number of CPU threads, since TensorFlow's CPU kernels split work by it: a CPU worker runs the `worker_cpus`
    threads Ray reserves for it (`worker_environment`), which a local run matches with `TF_NUM_INTRAOP_THREADS` and
    `TF_NUM_INTEROP_THREADS`).
  - One batch is in flight per worker; results are handled in the order they finish. The driver writes every PNG
    (atomically) and saves the run record after each batch's files, as a local run does, so a run stopped under
    Ray can be finished locally and the other way round.
  - A worker whose process dies loses only the batch it held: Ray restarts the actor (up to `max_retries` times),
    the batch goes to the next free worker, and after `max_retries` failed attempts of one batch the run stops
    with a one-line error naming its images. Nothing partial is ever written: files are written by the driver only,
    from complete results.
  - The driver still builds the ensemble itself, for the record's settings (weight fingerprints) and the
    surrogate checks before any work; on a GPU machine that costs the driver the models' memory once.

When to use which:
  - `--strategy=mirrored` (`tfattack.distributed`): the GPUs of one machine in one process; each batch is split
    over the replicas (so the record's batch geometry differs from a one-device run). The simplest choice for a
    single multi-GPU machine with large batches.
  - `--engine=ray` (this module): many processes, on one machine or a cluster (SLURM nodes running `ray start`);
    whole batches per worker, outputs identical to a local run, surviving a lost worker. The choice for more
    than one machine, for many CPUs, or for long runs on preemptible nodes.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from tfattack.runs import THREAD_VARIABLES, UsageError, kernels as process_kernels

ENGINES = ("local", "ray")
INSTALL_HINT = "pip install 'tfattack[ray]'"
# Attempts of one batch after the first that a worker's death may cost before the run gives up; each actor may be
# restarted as often.
MAX_RETRIES = 3
# Environment the workers inherit from the driver: oneDNN's switch and the thread pools change the kernels
# TensorFlow runs (and so the last bits of the images); the log level keeps the workers as quiet as the driver.
INHERITED_ENVIRONMENT = ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL") + THREAD_VARIABLES


def worker_environment(worker_cpus: float, worker_gpus: float) -> Dict[str, str]:
    """The environment variables each worker starts with: the driver's INHERITED_ENVIRONMENT and, for CPU-only
    workers whose thread pools the driver does not size, TensorFlow's pools sized to the CPUs Ray reserves for the
    worker. Left alone, TensorFlow in every worker takes every core of its machine, so N workers on one machine
    oversubscribe its cores N times over."""
    env = {name: os.environ[name] for name in INHERITED_ENVIRONMENT if name in os.environ}
    if worker_gpus == 0:
        threads = str(max(1, int(worker_cpus)))
        for name in THREAD_VARIABLES:
            env.setdefault(name, threads)
    return env


class WorkerError(UsageError):
    """A batch could not be crafted on any worker (each attempt's worker died): one line naming its images."""


def require_ray(flag: str = "--engine=ray"):
    """The `ray` module, or a one-line UsageError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"{flag} needs Ray, which is not installed here: {INSTALL_HINT}") from None
    return ray


def check_engine(engine: str, *, num_workers: Optional[int] = None, worker_gpus: float = 0.0,
                 worker_cpus: float = 1.0, ray_address: Optional[str] = None) -> None:
    """One-line UsageErrors, naming the flag, before any long work."""
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "local":
        given = [name for name, value in (("--ray_address", ray_address), ("--num_workers", num_workers))
                 if value is not None]
        if given:
            raise UsageError(f"{' and '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} with --engine=ray")
        return
    if num_workers is not None and num_workers < 1:
        raise UsageError(f"--num_workers must be >= 1, got {num_workers}")
    if not worker_cpus > 0:
        raise UsageError(f"--worker_cpus must be > 0, got {worker_cpus:g}")
    if not worker_gpus >= 0:
        raise UsageError(f"--worker_gpus must be >= 0, got {worker_gpus:g}")
    require_ray()
    if ray_address is not None:
        check_reachable(ray_address)


@dataclasses.dataclass(frozen=True)
class EnsembleRecipe:
    """What `tfattack.runs.build_ensemble` is given: each worker builds its own ensemble from it."""

    entries: Sequence[Tuple[str, float]]
    checkpoints: Mapping[str, str] = dataclasses.field(default_factory=dict)
    model_dir: Optional[str] = None
    fuse: str = "logits"
    random_weights: bool = False

    def build(self):
        from tfattack import runs

        return runs.build_ensemble(list(self.entries), dict(self.checkpoints), self.model_dir, self.fuse,
                                   self.random_weights)


@dataclasses.dataclass(frozen=True)
class AttackRecipe:
    """A preset name and `tfattack.attacks.build` overrides: each worker builds its own attack from it."""

    preset: Optional[str]
    overrides: Mapping[str, object] = dataclasses.field(default_factory=dict)
    config: Optional[object] = None  # a full tfattack AttackConfig instead of a preset (then no overrides)

    def build(self):
        import tfattack

        if self.config is not None:
            return tfattack.attacks.build(config=self.config, **dict(self.overrides))
        return tfattack.attacks.build(self.preset, **dict(self.overrides))


def driver_settings() -> Dict[str, bool]:
    """TensorFlow settings of this process that change which kernels run, for the workers to take over: op
    determinism (`enable_op_determinism`, which the benchmarks turn on) selects other kernels for some ops (a
    resize's gradient among them), and so other last bits."""
    import sys

    if "tensorflow" not in sys.modules:
        return {"op_determinism": False}
    from tensorflow.python.framework import config  # the public API can set it but not read it

    return {"op_determinism": bool(config.is_op_determinism_enabled())}


def _start_worker_tensorflow(quiet: bool, settings: Mapping[str, bool]) -> None:
    if quiet:
        # TensorFlow's start-up lines (CUDA probing, CPU notices), once per worker, hidden as the tools do.
        from tfattack.cli import start_tensorflow_quietly
        start_tensorflow_quietly(verbose=False)
    import tensorflow as tf

    if settings.get("op_determinism"):
        tf.config.experimental.enable_op_determinism()


class _Worker:
    """The actor: one ensemble and one attack, built once; `craft(batch)` -> `(labels, legal)`."""

    def __init__(self, ensemble: EnsembleRecipe, attack: AttackRecipe, targeted: bool, quiet: bool,
                 settings: Mapping[str, bool]):
        from tfattack.errors import UserError

        self.error = None
        try:
            _start_worker_tensorflow(quiet, settings)
            import tensorflow as tf

            # Workers sharing a GPU (--worker_gpus < 1) each take memory as they need it, not all of it up front.
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
            self.model, self.attack, self.targeted = ensemble.build(), attack.build(), targeted
        except UserError as err:
            # Said by the first call as a one-line error; raised here it would only show as the actor's death.
            self.error = err

    def pid(self) -> int:
        if self.error is not None:
            raise self.error
        return os.getpid()

    def craft(self, batch):
        from tfattack import pipeline

        if self.error is not None:
            raise self.error
        return pipeline.craft_batch(self.model, self.attack, batch, self.targeted)


@dataclasses.dataclass(frozen=True)
class VictimRecipe:
    """What `tfattack.runs.load_models` is given for one victim: each scoring worker loads its own copy."""

    name: str
    checkpoint: Optional[str] = None
    model_dir: Optional[str] = None
    random_weights: bool = False

    def build(self):
        from tfattack import runs

        checkpoints = {self.name: self.checkpoint} if self.checkpoint else {}
        return runs.load_models([self.name], checkpoints, self.model_dir, self.random_weights)[0]


@dataclasses.dataclass(frozen=True)
class ScoringJob:
    """One (victim, defense) pair of an evaluation over all its images: the unit of work of a RayScorer."""

    victim: VictimRecipe
    defense: object  # a tfattack.defenses.Defense (its draws follow each image's ImageId)
    dataset: object
    adv_paths: Mapping[str, Sequence[str]]
    batch_size: int
    compiled: bool


class _Scorer:
    """The scoring actor: loads each victim once (kept for later jobs) and predicts whole (victim, defense) pairs."""

    def __init__(self, quiet: bool, settings: Mapping[str, bool]):
        _start_worker_tensorflow(quiet, settings)
        self.models = {}

    def pid(self) -> int:
        return os.getpid()

    def predict(self, job: ScoringJob):
        from tfattack import evaluate

        if job.victim not in self.models:
            self.models[job.victim] = job.victim.build()
        return evaluate.predict_pair(job.dataset, job.adv_paths, self.models[job.victim], job.defense,
                                     job.batch_size, job.compiled)


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """A one-line UsageError when nothing answers at a HOST:PORT address: Ray itself keeps retrying for minutes."""
    import socket

    if address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray_address must be auto or HOST:PORT (a Ray head's address), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise UsageError(f"--ray_address={address}: nothing answers at {host}:{port} ({err.strerror or err}); start "
                         f"the cluster's head there (ray start --head) or give its address") from None


def _unwrap(ray, err: BaseException) -> BaseException:
    """A worker's UserError as itself (one line), anything else as Ray reports it (with the remote traceback)."""
    from tfattack.errors import UserError

    cause = getattr(err, "cause", None)
    return cause if isinstance(err, ray.exceptions.RayTaskError) and isinstance(cause, UserError) else err


def connect(address: Optional[str] = None, num_workers: Optional[int] = None, worker_cpus: float = 1.0):
    """(the ray module, whether this call started the connection): joins the cluster at `address`, or starts an
    embedded Ray on this machine sized for `num_workers` workers; an existing connection of this process is used as
    it is."""
    import logging

    ray = require_ray()
    if ray.is_initialized():
        return ray, False
    if address is None:
        cpus = os.cpu_count() or 1
        if num_workers is not None:
            # Logical CPUs: enough for the workers asked for (they share the machine's cores).
            cpus = max(cpus, int(-(-num_workers * worker_cpus // 1)))
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
    else:
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise UsageError(f"--ray_address={address}: cannot connect to a Ray cluster "
                             f"({' '.join(str(err).split())})") from None
    return ray, True


@contextlib.contextmanager
def session(address: Optional[str] = None, num_workers: Optional[int] = None, worker_cpus: float = 1.0):
    """`with scale.session(...):` one Ray connection for several pools in a row (a benchmark's sets), instead of each
    pool starting and ending an embedded Ray of its own; ended on leaving if this call started it."""
    ray, started = connect(address, num_workers, worker_cpus)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


class RayPool:
    """Long-lived Ray actors working through a stream of items, each item exactly once, surviving lost workers.

    `actor` is the worker class (built on each worker from `actor_args`, with a `pid()` method) and `method` the name
    of the method each item is sent to. The workers (and an embedded Ray) start at the first `run` with work to do;
    with an `address`, the cluster is joined and sized on entering the `with` block, so that a wrong address fails
    before any work. Leaving the block ends the workers and this process's Ray connection (an embedded Ray ends with
    it; a cluster joined by address keeps running). If Ray is already initialised in this process (`ray.init` by the
    caller), that cluster is used and the connection left open. `num_workers` defaults to what the cluster holds: its
    GPUs / `worker_gpus`, else its CPUs / `worker_cpus`. `say(text)` receives one-line notes (workers ready, a worker
    lost); `quiet` hides TensorFlow's start-up lines in the workers (Ray forwards their output to this process).
    Subclasses name an item in messages (`holding_text`, `lost_text`).
    """

    method = "run"

    def __init__(self, actor, actor_args: tuple, *, address: Optional[str] = None, num_workers: Optional[int] = None,
                 worker_gpus: float = 0.0, worker_cpus: float = 1.0, max_retries: int = MAX_RETRIES,
                 say: Optional[Callable[[str], None]] = None, quiet: bool = True):
        check_engine("ray", num_workers=num_workers, worker_gpus=worker_gpus, worker_cpus=worker_cpus,
                     ray_address=address)
        self.actor, self.actor_args = actor, tuple(actor_args)
        self.address, self.num_workers = address, num_workers
        self.worker_gpus, self.worker_cpus = float(worker_gpus), float(worker_cpus)
        self.max_retries = int(max_retries)
        self.say = say or (lambda text: None)
        self.quiet = quiet
        self._ray = None
        self._started_ray = False
        self._workers: List = []
        self._pids: Dict[int, int] = {}  # id(actor handle) -> its current process id
        self._running: Dict[object, tuple] = {}  # ObjectRef -> (worker, item, failed attempts)

    # ----- what an item is called -----

    def holding_text(self, item) -> str:
        """The item a dead worker held, in a note: 'a Ray worker died holding <this>'."""
        return repr(item)

    def lost_text(self, item, failures: int, reason: str) -> str:
        """The one-line error when an item is lost more than `max_retries` times."""
        return f"{self.holding_text(item)} was lost {failures} time(s) with its Ray worker (the last time: {reason})"

    # ----- lifecycle -----

    def __enter__(self):
        if self.address is not None:
            self._connect()  # a wrong address or a cluster too small is said before any work
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Ends the workers, and the Ray connection if this object opened it."""
        ray = self._ray
        if ray is None:
            return
        for worker in self._workers:
            try:
                ray.kill(worker, no_restart=True)
            except Exception:  # already gone, or the cluster is: nothing left to end
                pass
        self._workers, self._pids = [], {}
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
        self._ray = None

    def worker_pids(self) -> List[int]:
        """The workers' current process ids (a restarted worker has a new one), for monitoring and fault tests."""
        return [self._pids[id(worker)] for worker in self._workers if id(worker) in self._pids]

    def holding_items(self) -> Dict[int, object]:
        """The item each busy worker holds, by process id."""
        return {self._pids[id(worker)]: item for worker, item, _ in self._running.values() if id(worker) in self._pids}

    def _connect(self) -> None:
        """Joins (or starts) Ray and sizes the pool; no workers yet."""
        if self._ray is not None:
            return
        self._ray, self._started_ray = connect(self.address, self.num_workers, self.worker_cpus)
        self._count = self._worker_count(self._ray.cluster_resources())

    def _start(self) -> None:
        self._connect()
        ray, count = self._ray, self._count
        env = worker_environment(self.worker_cpus, self.worker_gpus)
        actor = ray.remote(self.actor).options(
            num_cpus=self.worker_cpus, num_gpus=self.worker_gpus, max_restarts=self.max_retries,
            max_task_retries=0, runtime_env={"env_vars": env} if env else None)
        self._workers = [actor.remote(*self.actor_args) for _ in range(count)]
        refs = [worker.pid.remote() for worker in self._workers]
        try:
            pids = ray.get(refs)
        except ray.exceptions.RayError as err:
            raise _unwrap(ray, err) from None
        self._pids = {id(worker): pid for worker, pid in zip(self._workers, pids)}
        where = "an embedded Ray" if self.address is None and self._started_ray else "the Ray cluster"
        self.say(f"{count} Ray worker(s) ready on {where} ({self.worker_cpus:g} CPU, {self.worker_gpus:g} GPU each)")

    def kernels(self) -> str:
        """`tfattack.runs.kernels` of the workers (their environment, their device kind): what a record says made the
        results the workers compute."""
        return process_kernels(worker_environment(self.worker_cpus, self.worker_gpus),
                               "GPU" if self.worker_gpus > 0 else "CPU")

    def _worker_count(self, resources: Mapping[str, float]) -> int:
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        fit = int(cpus // self.worker_cpus)
        if self.worker_gpus > 0:
            fit = min(fit, int(gpus // self.worker_gpus))
        count = self.num_workers if self.num_workers is not None else max(fit, 1)
        if count > fit:
            raise UsageError(f"--num_workers={count} workers of --worker_cpus={self.worker_cpus:g} and "
                             f"--worker_gpus={self.worker_gpus:g} do not fit on the Ray cluster ({cpus:g} CPUs, "
                             f"{gpus:g} GPUs): ask for fewer or smaller workers")
        return count

    # ----- work -----

    def run(self, items: Iterable) -> Iterator[tuple]:
        """Yields `(item, result)` for every item of `items`, each exactly once, in the order they finish.

        Items are read from `items` only as workers come free. Each failed attempt (the worker died) puts the item
        back at the front of the queue; its worker is used again once Ray has restarted it."""
        if hasattr(items, "__len__") and len(items) == 0:
            return
        if not self._workers:
            self._start()
        ray = self._ray
        source = iter(items)
        queue = collections.deque()  # (item, failed attempts) to send again, before new items
        idle = list(self._workers)
        running = self._running = {}
        probes = {}  # ObjectRef of a restarted worker's pid() -> worker
        exhausted = False

        def feed():
            nonlocal exhausted
            while idle:
                if queue:
                    item, failures = queue.popleft()
                elif not exhausted:
                    item, failures = next(source, None), 0
                    if item is None:
                        exhausted = True
                        return
                else:
                    return
                worker = idle.pop(0)
                running[getattr(worker, self.method).remote(item)] = (worker, item, failures)

        feed()
        while running or probes:
            done, _ = ray.wait(list(running) + list(probes), num_returns=1)
            ref = done[0]
            if ref in probes:
                worker = probes.pop(ref)
                try:
                    self._pids[id(worker)] = ray.get(ref)
                    idle.append(worker)
                    self.say(f"a Ray worker was restarted (process {self._pids[id(worker)]})")
                except ray.exceptions.RayActorError:
                    self._workers.remove(worker)  # out of restarts: its slot is gone
                    self._pids.pop(id(worker), None)
                    self.say(f"a Ray worker is gone for good ({len(self._workers)} left)")
                feed()
                continue
            worker, item, failures = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                failures += 1
                if failures > self.max_retries:
                    reason = " ".join(str(getattr(err, "error_msg", None) or type(err).__name__).split())[:200]
                    raise WorkerError(self.lost_text(item, failures, reason)) from None
                self.say(f"a Ray worker died holding {self.holding_text(item)}: sending it again "
                         f"(attempt {failures + 1} of {self.max_retries + 1})")
                queue.appendleft((item, failures))
                # pid() with retries waits for Ray to restart the actor (and fails if it is out of restarts).
                probes[worker.pid.options(max_task_retries=-1).remote()] = worker
                feed()
                continue
            except ray.exceptions.RayError as err:
                raise _unwrap(ray, err) from None
            idle.append(worker)
            feed()  # the next item is on its way before this one's result is handled
            yield item, result
        if queue:
            item, failures = queue[0]
            raise WorkerError(f"no Ray worker left: every worker died more than {self.max_retries} time(s); "
                              f"not done: {self.holding_text(item)}")


class RayCrafter(RayPool):
    """Crafts batches on Ray actors: the `crafter` of `tfattack.pipeline.attack_dataset`.

        with RayCrafter(ensemble_recipe, attack_recipe, targeted, num_workers=4) as crafter:
            pipeline.attack_dataset(dataset, out, model, attack, ..., crafter=crafter)

    Each worker builds the ensemble and the attack once from the recipes; the unit of work is a batch. The workers
    start after the run's plan and record checks (see `RayPool` for the cluster, the pool's size and lost workers).
    """

    method = "craft"

    def __init__(self, ensemble: EnsembleRecipe, attack: AttackRecipe, targeted: bool, *,
                 address: Optional[str] = None, num_workers: Optional[int] = None, worker_gpus: float = 0.0,
                 worker_cpus: float = 1.0, max_retries: int = MAX_RETRIES,
                 say: Optional[Callable[[str], None]] = None, quiet: bool = True):
        super().__init__(_Worker, (ensemble, attack, targeted, quiet, driver_settings()), address=address, num_workers=num_workers,
                         worker_gpus=worker_gpus, worker_cpus=worker_cpus, max_retries=max_retries, say=say,
                         quiet=quiet)
        self.ensemble, self.attack, self.targeted = ensemble, attack, targeted

    def holding_text(self, batch) -> str:
        return f"images {', '.join(batch.ids)}"

    def lost_text(self, batch, failures: int, reason: str) -> str:
        return (f"the batch of {super().lost_text(batch, failures, reason)}; the images finished so far are kept: "
                f"run again to resume")

    def holding(self) -> Dict[int, Tuple[str, ...]]:
        """The image ids of the batch each busy worker holds, by process id."""
        return {pid: tuple(batch.ids) for pid, batch in self.holding_items().items()}

    def craft(self, batches: Iterable) -> Iterator[tuple]:
        """Yields `(batch, labels, legal)` for every batch of `batches`, each exactly once, in the order they finish."""
        for batch, (labels, legal) in self.run(batches):
            yield batch, labels, legal


class RayScorer(RayPool):
    """Scores an evaluation's (victim, defense) pairs on Ray actors: the `scorer` of `tfattack.evaluate.evaluate`.

        with RayScorer({"efficientnet_lite2": VictimRecipe("efficientnet_lite2")}, num_workers=2) as scorer:
            evaluate.evaluate(dataset, sets, victims, defenses, scorer=scorer)

    A worker reads the clean and adversarial files itself (on a cluster they must be on a shared file system, at the
    same paths) and runs one victim behind one defense over every batch, exactly as a local evaluation runs that pair,
    so the predictions are the local ones (a random defense's draws follow each image's ImageId in both).
    """

    method = "predict"

    def __init__(self, victims: Mapping[str, VictimRecipe], *, address: Optional[str] = None,
                 num_workers: Optional[int] = None, worker_gpus: float = 0.0, worker_cpus: float = 1.0,
                 max_retries: int = MAX_RETRIES, say: Optional[Callable[[str], None]] = None, quiet: bool = True):
        super().__init__(_Scorer, (quiet, driver_settings()), address=address, num_workers=num_workers, worker_gpus=worker_gpus,
                         worker_cpus=worker_cpus, max_retries=max_retries, say=say, quiet=quiet)
        self.victims = dict(victims)

    def holding_text(self, job: ScoringJob) -> str:
        return f"the predictions of {job.victim.name} behind {job.defense.spec}"

    def lost_text(self, job: ScoringJob, failures: int, reason: str) -> str:
        return f"{super().lost_text(job, failures, reason)}; no report was written: run again"

    def predict_pairs(self, dataset, adv_paths, pairs, batch_size: int, compiled: bool) -> Iterator[tuple]:
        """Yields `((victim name, defense), (clean predictions, {set: adversarial predictions}))` for every pair, in
        the order they finish."""
        unknown = sorted({name for name, _ in pairs} - set(self.victims))
        if unknown:
            raise ValueError(f"RayScorer has no VictimRecipe for {', '.join(unknown)}")
        jobs = [ScoringJob(self.victims[name], defense, dataset, dict(adv_paths), batch_size, compiled)
                for name, defense in pairs]
        pair_of = {id(job): pair for job, pair in zip(jobs, pairs)}
        for job, result in self.run(jobs):
            yield pair_of[id(job)], result


def attack_dataset(dataset, output_dir: str, ensemble: EnsembleRecipe, attack: AttackRecipe, *, batch_size: int,
                   targeted: bool, engine: str = "local", ray_address: Optional[str] = None,
                   num_workers: Optional[int] = None, worker_gpus: float = 0.0, worker_cpus: float = 1.0,
                   max_retries: int = MAX_RETRIES, say: Optional[Callable[[str], None]] = None, **options):
    """`tfattack.pipeline.attack_dataset` from recipes, crafting on `engine` ("local" or "ray"); `options` are that
    function's (overwrite, record_name, info, progress, ...). Returns its RunSummary."""
    from tfattack import pipeline

    check_engine(engine, num_workers=num_workers, worker_gpus=worker_gpus, worker_cpus=worker_cpus,
                 ray_address=ray_address)
    model, built = ensemble.build(), attack.build()
    if engine == "local":
        return pipeline.attack_dataset(dataset, output_dir, model, built, batch_size=batch_size, targeted=targeted,
                                       **options)
    with RayCrafter(ensemble, attack, targeted, address=ray_address, num_workers=num_workers,
                    worker_gpus=worker_gpus, worker_cpus=worker_cpus, max_retries=max_retries, say=say) as crafter:
        return pipeline.attack_dataset(dataset, output_dir, model, built, batch_size=batch_size, targeted=targeted,
                                       crafter=crafter, **options)
