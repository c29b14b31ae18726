"""Sweeps: a validated space to Ray Tune, with Optuna's define-by-run search and ASHA, then a leaderboard.

Ray does the scheduling, checkpoints, retries and results; this module only translates the space
file into Tune's objects and the results into a table.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from trainables import DEADLINE_KEY, TUNE_KEY, ConfigError, TrainParams

from ._bag import BAG_SHARE
from ._params import Param
from ._sections import SamplerConfig, SchedulerConfig
from ._space import Space, choice_values

# Keys of ``data`` that hold paths: made absolute, because Tune runs each trial in its own folder.
_DATA_PATH_KEYS = ("root", "labels_csv", "img_dir", "cache_dir")
DEFAULT_STORAGE = "runs"


class DefineByRun:
    """Optuna's define-by-run search space for a ``Space``.

    Each searched parameter is suggested in an order where a ``when`` condition comes after the
    parameters it names, and only when the condition holds for the values drawn (or fixed) so far.
    Returns the constants (fixed values, ``data``, ``_origin``): ``OptunaSearch`` merges them into
    every trial's config.

    Example:
        >>> fn = DefineByRun(space.ordered_params(), trial_constants(space))
        >>> trial = optuna.create_study().ask()
        >>> config = {**fn(trial), **trial.params}  # what OptunaSearch hands to Tune
    """

    def __init__(self, params: Sequence[Param], constants: Mapping[str, Any],
                 per_choice: Mapping[str, Mapping[Any, Mapping[str, Any]]] | None = None) -> None:
        self.params = list(params)
        self.constants = dict(constants)
        # Constants that follow a drawn choice (``Space.per_choice``): a backbone's own round length.
        self.per_choice = {k: dict(v) for k, v in (per_choice or {}).items()}

    def __call__(self, trial: Any) -> dict[str, Any]:
        values = {k: v for k, v in self.constants.items() if k != "data" and not k.startswith("_")}
        for p in self.params:
            if not p.active(values):
                continue
            values[p.name] = suggest(trial, p)
        # a searcher pickled before per_choice existed has none
        return {**self.constants, **choice_values(getattr(self, "per_choice", {}), values)}


def suggest(trial: Any, p: Param) -> Any:
    """Draw one parameter with Optuna's ``suggest_*`` from its distribution (log and step as the space file says)."""
    return p.suggest(trial)


def trial_constants(space: Space) -> dict[str, Any]:
    """What every trial's config holds besides the searched values: fixed values, ``data``, ``_origin``.

    Relative paths become absolute (trials run in their own folders). When the sweep maximizes a
    ``val_*`` metric and the space does not set ``select_metric``, the trainable picks each trial's
    best epoch (and so its predictions) by the same metric.
    """
    fixed = dict(space.fixed)
    if isinstance(fixed.get("pretrained_path"), str):
        fixed["pretrained_path"] = _absolute(fixed["pretrained_path"])
    metric = space.search.metric
    if (
        "select_metric" not in fixed
        and "select_metric" not in space.params
        and space.search.mode == "max"
        and metric.startswith("val_")
        and "select_metric" in TrainParams.__dataclass_fields__
    ):
        fixed["select_metric"] = metric
    return {**fixed, "data": data_dict(space), "_origin": str(space.origin)}


def data_dict(space: Space) -> dict[str, Any]:
    """The ``data`` section as trials get it: plain values, paths absolute."""
    data = space.data.to_dict()
    for key in _DATA_PATH_KEYS:
        if isinstance(data.get(key), str):
            data[key] = _absolute(data[key])
    return data


def _absolute(path: str) -> str:
    if "://" in path or path.startswith("~"):
        return path
    return str(Path(path).resolve())


def trial_dirname(trial: Any) -> str:
    """``trial_<id>``: Tune's default name spells out the config, data section included."""
    return f"trial_{trial.trial_id}"


def create_sampler(cfg: SamplerConfig, *, n_trials: int | None = 40) -> Any:
    """Optuna's sampler by name (``search._samplers.SAMPLER``), seeded.

    Example:
        >>> create_sampler(SamplerConfig(type="tpe", seed=0), n_trials=12)  # doctest: +SKIP
    """
    from ._samplers import SAMPLER

    given = {"seed": cfg.seed, "n_startup_trials": cfg.n_startup_trials}
    entry = SAMPLER.get(cfg.type)
    return SAMPLER.create(cfg.type, n_trials=n_trials, **{k: v for k, v in given.items() if k in entry.options})


def create_scheduler(cfg: SchedulerConfig) -> Any:
    """Tune's scheduler by name (``search._samplers.TUNE_SCHEDULER``); metric and mode come from ``TuneConfig``."""
    from ._samplers import TUNE_SCHEDULER

    entry = TUNE_SCHEDULER.get(cfg.type)
    return TUNE_SCHEDULER.create(cfg.type, **{k: getattr(cfg, k) for k in entry.options})


def run_dir_of(space: Space, out: str | None = None) -> str:
    """Where the sweep lives: ``<out or storage or ./runs>/<name>``, a local path or a URI."""
    storage = str(out or space.storage or DEFAULT_STORAGE)
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    return f"{storage.rstrip('/')}/{space.name}"


def describe(space: Space, *, run_dir: str) -> str:
    """The resolved space and the trial budget, for ``--dry-run``."""
    cfg = space.search
    lines = [f"space {space.name} ({space.origin})"]
    data = {k: v for k, v in data_dict(space).items() if v is not None}
    lines.append("data: " + ", ".join(f"{k}={v}" for k, v in data.items()))
    lines.append("fixed:")
    width = max([len(k) for k in list(space.fixed) + list(space.params)] + [8])
    lines += [f"  {k:<{width}}  {v!r}" for k, v in space.fixed.items()] or ["  (none)"]
    sampler = cfg.sampler.type + (f", seed {cfg.sampler.seed}" if cfg.sampler.seed is not None else "")
    lines.append(f"searched ({len(space.params)}; Optuna {sampler}):")
    lines += [f"  {p.name:<{width}}  {p.describe()}" for p in space.ordered_params()] or ["  (none: every trial is the same run)"]
    if cfg.objectives and cfg.multi_objective:
        lines.append("objectives: " + ", ".join(f"{o.metric} ({o.mode})" for o in cfg.objectives) + f"; {cfg.scheduler.type} prunes on {cfg.metric}")
    else:
        lines.append(f"metric: {cfg.metric} ({cfg.mode})")
    s = cfg.scheduler
    if space.auto_epochs:
        lines.append("epochs: auto (sized at the start from the data, this machine's speed and the budget)")
    elif space.sizing is not None:
        lines.append(space.sizing.describe())
    if s.type == "asha":
        auto = "auto" if space.auto_epochs else None
        lines.append(
            f"scheduler: asha, max_t {s.max_t or auto}, grace_period {s.grace_period or auto}, reduction_factor {s.reduction_factor:g}"
        )
        if s.max_t is not None and space.max_epochs() is not None and s.max_t < space.max_epochs():
            lines.append(f"  note: max_t {s.max_t} < epochs {space.max_epochs()}: no trial trains past epoch {s.max_t}")
    elif s.type == "median":
        lines.append(f"scheduler: median, grace_period {s.grace_period}, min_samples_required {s.min_samples_required}")
    else:
        lines.append("scheduler: fifo (no early stopping)")
    r = cfg.resources
    lines.append(
        f"resources per trial: cpu {r.cpu:g}, gpu {r.gpu:g}; max_concurrent {cfg.max_concurrent or 'as resources allow'}; "
        f"time_budget_s {cfg.time_budget_s if cfg.time_budget_s is not None else 'none'}; max_failures {cfg.max_failures}"
    )
    per = space.max_epochs_per_trial()
    if cfg.n_trials is None:
        lines.append(f"budget: {cfg.time_budget_s:g}s; trials start until it is spent")
    elif per is None:
        lines.append(f"budget: {cfg.n_trials} trials, length sized at the start")
    else:
        lines.append(f"budget: {cfg.n_trials} trials x at most {per} epochs = at most {cfg.n_trials * per} trial-epochs")
    lines.append(f"output: {run_dir} (report.html at the end)")
    from ._tracking import describe_tracking

    lines.append(describe_tracking(space, run_dir=run_dir))
    return "\n".join(lines)


def _quiet_logs(verbose: bool) -> None:
    """Ray and Optuna say nothing unless --verbose: the progress lines and the leaderboard say it."""
    import optuna

    # Failed trials are logged by Tune with a traceback at ERROR; the progress line and the
    # leaderboard's error column carry the reason instead.
    level = logging.INFO if verbose else logging.CRITICAL
    for name in ("ray", "ray.tune", "ray.train", "ray.air", "ray.data"):
        logging.getLogger(name).setLevel(level)
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    if not verbose:
        import warnings

        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
        warnings.filterwarnings("ignore", module=r"optuna(\.|$)")
        # Ray's driver-side notices ("Tip: ...", usage stats) stay off.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def _init_ray(address: str | None, verbose: bool) -> bool:
    """Join the cluster at ``address``, or start a local Ray; ``False`` when Ray was already up (tests)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": verbose,
        "logging_level": logging.INFO if verbose else logging.ERROR,
    }
    try:
        # Without --address (or RAY_ADDRESS) a sweep gets a Ray of its own: a bare ray.init() would join
        # whatever cluster `ray start` last left in /tmp/ray, e.g. another user's, and die with its nodes.
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, **kwargs)
    except ConnectionError as exc:
        raise ConfigError(
            f"no Ray cluster at {address!r} ({' '.join(str(exc).split())[:200]}); start one with `ray start --head` "
            "or drop --address to run on this machine",
            field="--address",
        ) from None
    return True


def _preflight(space: Space, constants: Mapping[str, Any]) -> Any:
    """Fail before Ray starts: check the defaults as one trial config, and build the data cache once.

    Returns the data set at the first image size (its split sizes size ``epochs: auto``).
    """
    from trainables import DataConfig, load_dataset

    TrainParams.from_config({**space.defaults(), **constants}, origin=space.origin)
    data = DataConfig.from_dict(constants["data"], origin=space.origin)
    sizes: list[Any] = [space.fixed.get("image_size")]
    p = space.params.get("image_size")
    if p is not None:
        sizes = list(p.choices) if p.type == "categorical" else [p.default_value()]
    first = None
    for size in sizes:
        try:
            ds = load_dataset(data, image_size=size, verbose=True)
        except ConfigError as exc:
            if exc.origin:
                raise
            raise ConfigError(exc.message, origin=space.origin, field=exc.field) from None
        first = first or ds
    return first


# Where a sweep with a budget writes its trials' deadline (``trainables.DEADLINE_KEY``).
DEADLINE_FILE = "deadline.txt"

# The ensemble step and the report run inside the budget: the trials stop this much before it ends.
_RESERVE_SHARE = 0.1
# (A 900 s sweep of BloodMNIST-sized test splits spent 89 s on the ensemble step and the report, bench/RESULTS.md.)
_RESERVE_MAX_S = 120.0


def trial_budget(budget_s: float | None, elapsed_s: float, *, share: float = 1.0) -> float | None:
    """Seconds the trials get of a ``budget_s`` sweep already ``elapsed_s`` in: the rest, less a reserve
    (a tenth of the budget, at most two minutes) for the ensemble step and the report; at least 10 s.
    ``share``: the part of that the search's trials get (a sweep that bags keeps the rest for its bags)."""
    if budget_s is None:
        return None
    reserve = min(_RESERVE_SHARE * budget_s, _RESERVE_MAX_S)
    return max(10.0, (budget_s - reserve - elapsed_s) * share)


def concurrency(space: Space) -> int:
    """Trials at once: ``max_concurrent``, else what the cluster's CPUs and GPUs allow per trial's resources."""
    import ray

    r = space.search.resources
    total = ray.cluster_resources() if ray.is_initialized() else {"CPU": os.cpu_count() or 1}
    slots = int(total.get("CPU", 1) // max(r.cpu, 1e-9))
    if r.gpu > 0:
        slots = min(slots, int(total.get("GPU", 0) // r.gpu))
    slots = max(1, slots)
    if space.search.max_concurrent:
        slots = min(slots, int(space.search.max_concurrent))
    return slots


def run_sweep(
    space: Space,
    *,
    out: str | None = None,
    address: str | None = None,
    resume: bool = False,
    verbose: bool = False,
    ensemble: bool = True,
    report: bool = True,
    spent_s: float = 0.0,
) -> int:
    """Run (or resume) the sweep of ``space``; write the leaderboard and the resolved space.

    Returns the exit status: 0 when at least one trial finished or was pruned, 1 when none did,
    130 when the sweep was interrupted (continue it with ``resume=True``). With ``ensemble`` the
    stacking ensemble of the best trials is built afterwards (``<run_dir>/ensemble``); when that fails
    the leaderboard stays written and the status is 2 (bad input, e.g. too few trials) or 1. With
    ``report`` the run folder gets ``report.html`` at the end. ``spent_s``: seconds of
    ``search.time_budget_s`` already spent before the call (``python -m search.run`` passes the time
    since its process started, so the whole command keeps to the budget).

    Example:
        >>> run_sweep(load_space("spaces/smoke.yaml", overrides=["data.root=/tmp/images"]), out="/tmp/runs")
        0
    """
    from ray import tune

    from trainables import train

    from ._leaderboard import read_text, tune_leaderboard, write_bytes, write_leaderboard

    # The budget counts from what the caller already spent (the CLI: its start-up and imports).
    t_begin = time.perf_counter() - max(0.0, float(spent_s))
    _quiet_logs(verbose)
    cfg = space.search
    run_dir = run_dir_of(space, out)
    address = address or space.ray.get("address")
    constants = trial_constants(space)
    n_trials = cfg.n_trials

    # Checked before Ray starts, so a wrong flag or a missing folder costs no cluster start-up.
    exists = tune.Tuner.can_restore(run_dir)
    if resume and not exists:
        raise ConfigError(f"no sweep to resume in {run_dir}; run without --resume to start one", origin=space.origin, field="--resume")
    if not resume and exists:
        raise ConfigError(
            f"{run_dir} already holds a sweep; pass --resume to continue it, or start a new one with "
            f"--set name=<new name> or --out <folder> (or delete the folder)",
            origin=space.origin,
            field="name",
        )
    from ._tracking import check_mlflow, describe_tracking

    check_mlflow(space)
    dataset = None
    if not address:
        dataset = _preflight(space, constants)
    else:  # on a cluster the data may live on the workers only
        TrainParams.from_config({**space.defaults(), **constants}, origin=space.origin)

    bag = ensemble and "://" not in run_dir and _bagging_wanted(space, dataset)
    share = 1.0 - BAG_SHARE if bag and cfg.time_budget_s else 1.0
    started = _init_ray(address, verbose)
    _quiet_logs(verbose)  # ray.init sets its loggers' levels again
    bag_dir = None
    try:
        trainable = tune.with_resources(_resumable(train), {"cpu": cfg.resources.cpu, "gpu": cfg.resources.gpu})
        budget_s = cfg.time_budget_s
        tuner_budget = trial_budget(budget_s, 0.0, share=share)
        if not resume and space.auto_epochs:
            space = _size(space, dataset, constants, budget_s=budget_s, elapsed_s=time.perf_counter() - t_begin, share=share)
            cfg = space.search
        constants = trial_constants(space)
        deadline_file = None
        if budget_s and "://" not in run_dir:
            deadline_file = Path(run_dir).expanduser().resolve() / DEADLINE_FILE
            constants[DEADLINE_KEY] = str(deadline_file)
        resolved = space.resolved()
        resolved["data"] = constants["data"]
        space_text = yaml.safe_dump(resolved, sort_keys=False)
        if resume:
            saved = read_text(run_dir, "space.yaml")
            n_trials = _saved_n_trials(saved, default=n_trials)
            if saved is not None and saved != space_text and not space.auto_epochs:
                print(f"[medsweep] note: the space differs from {run_dir}/space.yaml; a resumed sweep keeps the space it started with")
            print(f"[medsweep] resuming {run_dir}", flush=True)
            # Finished trials stay finished; unfinished and errored ones go on from their last checkpoint;
            # the searcher (the Optuna study) is restored from the experiment's state.
            tuner = tune.Tuner.restore(run_dir, trainable=trainable, resume_errored=True)
        else:
            write_bytes(run_dir, "space.yaml", space_text.encode())
            tuner_budget = trial_budget(budget_s, time.perf_counter() - t_begin, share=share)
            tuner = build_tuner(space, trainable, run_dir=run_dir, constants=constants, verbose=verbose, time_budget_s=tuner_budget)
            count = f"{cfg.n_trials} trials" if cfg.n_trials is not None else "trials until the budget is spent"
            budget_text = f", budget {budget_s:.0f}s (trials {tuner_budget:.0f}s)" if budget_s else ""
            print(
                f"[medsweep] sweep {space.name}: {count} x at most {space.max_epochs_per_trial()} epochs, "
                f"{cfg.metric} ({cfg.mode}), {cfg.scheduler.type}{budget_text}; writing to {run_dir}",
                flush=True,
            )
        print(f"[medsweep] {describe_tracking(space, run_dir=run_dir)}", flush=True)
        if deadline_file is not None and tuner_budget is not None:
            # Read by the trials before each epoch (see trainables.DEADLINE_KEY); a resume writes its own.
            deadline_file.parent.mkdir(parents=True, exist_ok=True)
            deadline_file.write_text(f"{time.time() + tuner_budget:.3f}\n")
        t0 = time.perf_counter()
        tuner.fit()
        seconds = time.perf_counter() - t0
        # The results as stored: after Ctrl+C the stored state still says which trials were running,
        # where the in-memory ones all read TERMINATED.
        uri_prefix = run_dir.split("://", 1)[0] + "://" if "://" in run_dir else ""
        frame = tune_leaderboard(run_dir, space, uri_prefix=uri_prefix)
        paths = write_leaderboard(frame, run_dir) + [f"{run_dir}/space.yaml"]
        complete = _complete(frame, space, seconds=seconds, n_trials=n_trials, trials_budget=tuner_budget)
        if bag and complete:
            bag_dir = _bagging_step(space, frame, run_dir=run_dir, dataset=dataset, t_begin=t_begin,
                                    deadline_file=deadline_file, verbose=verbose)
    finally:
        if started:
            import ray

            ray.shutdown()
    if complete:
        frame = _keep(frame, space, run_dir)
    status = _report(
        frame, space, paths=paths, seconds=seconds, ensemble=ensemble, run_dir=run_dir, n_trials=n_trials, trials_budget=tuner_budget,
        bag_dir=bag_dir,
    )
    _publish(space, run_dir, report=report)
    if cfg.time_budget_s:
        total = time.perf_counter() - t_begin
        print(f"[medsweep] used {total:.0f}s of the {cfg.time_budget_s:.0f}s budget ({total / cfg.time_budget_s:.0%})")
    return status


# Tune's error when a resumed trial's last recorded checkpoint is gone: a driver killed (SIGKILL) after a
# trial's newer checkpoint replaced it (num_to_keep=1) and before Tune saved the experiment state again.
LOST_CHECKPOINT = "Could not recover from checkpoint"


def _resumable(fn: Any) -> Any:
    """``fn`` as Tune's function trainable, except that a trial whose recorded checkpoint is gone trains
    again from epoch 0 instead of erroring; the kill costs that trial's epochs, not the trial.

    (Tune's own ``restart_errored`` cannot do it afterwards: Optuna's searcher has closed the errored
    trial and fails on its new results.)
    """
    from ray.tune.trainable import wrap_function

    base = wrap_function(fn)

    class Resumable(base):  # type: ignore[misc,valid-type]
        def restore(self, checkpoint_path: Any) -> Any:
            try:
                return super().restore(checkpoint_path)
            except ValueError as exc:
                if LOST_CHECKPOINT not in str(exc):
                    raise
                # Trainable.restore set the counters from the lost checkpoint's metrics before it failed.
                self._iteration, self._time_total = 0, 0.0
                self._time_since_restore, self._iterations_since_restore = 0.0, 0
                print(f"[medsweep] {self.trial_id}: its last checkpoint is gone (the sweep was killed while a "
                      "newer one replaced it); training from epoch 0", flush=True)
                return None

    Resumable.__name__ = Resumable.__qualname__ = base.__name__
    return Resumable


def _bagging_wanted(space: Space, dataset: Any) -> bool:
    """``ensemble.bagging`` for this sweep: as set, or (``auto``) when the validation split is small."""
    from ensemble import EnsembleSettings

    from ._bag import bagging_wanted

    settings = EnsembleSettings.from_dict(space.ensemble, origin=space.origin)
    n_val = len(dataset.splits["val"]) if dataset is not None else None
    return bagging_wanted(settings.bagging, n_val=n_val)


def _bagging_step(space: Space, frame: Any, *, run_dir: str, dataset: Any, t_begin: float, deadline_file: Path | None,
                  verbose: bool) -> Path | None:
    """Refit the ensemble's members on folds of train+val in the time the search left (``search._bag``);
    the bagging folder, or None (with the reason printed) when there are no bags to stack."""
    from ensemble import EnsembleSettings

    from ._bag import assemble_bags, plan_bags, run_bags

    settings = EnsembleSettings.from_dict(space.ensemble, origin=space.origin)
    budget_s = space.search.time_budget_s
    left = trial_budget(budget_s, time.perf_counter() - t_begin) if budget_s else None
    # (A cluster run has no dataset here: the folds' share of train+val is then taken as one pass.)
    n_train = len(dataset.splits["train"]) if dataset is not None else 1
    n_val = len(dataset.splits["val"]) if dataset is not None else 0
    plan = plan_bags(run_dir, folds=settings.bag_folds, seconds_left=left if left is not None else math.inf,
                     concurrency=concurrency(space), n_train=n_train, n_val=n_val)
    if isinstance(plan, str):
        print(f"[medsweep] {plan}; the ensemble stacks on the validation split", flush=True)
        return None
    names = ", ".join(f"{tid} ({epochs} epochs)" for tid, _, epochs in plan.members)
    print(f"[medsweep] bagging: {len(plan.members)} member(s) x {plan.folds} folds of train+val: {names}; "
          f"~{plan.seconds:.0f}s{' of ' + format(left, '.0f') + 's left' if left is not None else ''}"
          f"{'; ' + plan.note if plan.note else ''}", flush=True)
    if deadline_file is not None and left is not None:
        deadline_file.write_text(f"{time.time() + left:.3f}\n")
    r = space.search.resources
    try:
        results = run_bags(plan, run_dir=run_dir, resources={"cpu": r.cpu, "gpu": r.gpu},
                           time_budget_s=left, deadline_file=deadline_file, verbose=verbose)
        bag_dir, notes = assemble_bags(results, plan, run_dir=run_dir, sweep_board=frame, metric=space.search.metric)
    except ConfigError as exc:
        print(f"medsweep: warning: bagging failed ({exc.message}); the ensemble stacks on the validation split", file=sys.stderr)
        return None
    for note in notes:
        print(f"[medsweep] bagging: {note}", flush=True)
    if bag_dir is None:
        print("[medsweep] bagging: no bag finished; the ensemble stacks on the validation split", flush=True)
    return bag_dir


def size_standalone(space: Space) -> Space:
    """``epochs: auto`` for a run without a sweep (``search.fit``): the length of one full sweep trial."""
    from trainables import DataConfig, load_dataset

    data = DataConfig.from_dict(data_dict(space), origin=space.origin)
    dataset = load_dataset(data, image_size=space.fixed.get("image_size"), verbose=False)
    return _size(space, dataset, trial_constants(space), budget_s=space.search.time_budget_s, elapsed_s=0.0)


def _size(space: Space, dataset: Any, constants: Mapping[str, Any], *, budget_s: float | None, elapsed_s: float, share: float = 1.0) -> Space:
    """``epochs: auto`` made concrete: this machine's speed on the space's backbones, the data's size, the budget."""
    from trainables import DataConfig, load_dataset

    from ._budget import DEFAULT_BUDGET_S, FULL_TRIALS, MIN_FULL_TRIALS, size_space

    if dataset is None:  # a cluster run: the driver reads the data once to know its size
        try:
            dataset = load_dataset(DataConfig.from_dict(constants["data"], origin=space.origin), image_size=space.fixed.get("image_size"))
        except ConfigError as exc:
            raise ConfigError(
                f"`epochs: auto` needs the data on this machine to size the trials ({exc.message}); "
                "set a number of epochs instead (--set epochs=20)",
                origin=space.origin,
                field="fixed.epochs",
            ) from None
    # With a trial count and no budget, trials are sized as for the default budget.
    budget = trial_budget(budget_s if budget_s else DEFAULT_BUDGET_S, elapsed_s, share=share) or DEFAULT_BUDGET_S
    full_trials, min_full_trials = FULL_TRIALS, MIN_FULL_TRIALS
    if share < 1.0:  # a sweep that bags: trials short enough that a bag of a full-length one fits the bags' share
        from ensemble import EnsembleSettings

        from ._bag import full_trials_for_bagging

        folds = EnsembleSettings.from_dict(space.ensemble, origin=space.origin).bag_folds
        full_trials = full_trials_for_bagging(concurrency=concurrency(space), n_train=len(dataset.splits["train"]),
                                              n_val=len(dataset.splits["val"]), folds=folds)
        min_full_trials = full_trials  # fewer, longer trials would not leave their bags the time they need
    sizing = size_space(space, dataset, budget_s=budget, concurrency=concurrency(space), echo=print,
                        full_trials=full_trials, min_full_trials=min_full_trials)
    print(f"[medsweep] {sizing.describe()}", flush=True)
    return space.with_sizing(sizing)


def _complete(frame: Any, space: Space, *, seconds: float, n_trials: int | None, trials_budget: float | None = None) -> bool:
    """No trial runs or waits (an interrupted sweep is resumed later and may need any checkpoint)."""
    if frame.empty or frame["status"].isin(["running", "pending"]).any():
        return False
    budget = trials_budget if trials_budget is not None else space.search.time_budget_s
    # Tune ends a budget a little before or after the second it names.
    return (n_trials is not None and len(frame) >= n_trials) or (budget is not None and seconds >= 0.98 * budget)


def _keep(frame: Any, space: Space, run_dir: str) -> Any:
    """``search.keep`` applied to the ended sweep; the leaderboard's ``disk_mb`` counted again and rewritten."""
    from ._disk import keep_what_was_asked
    from ._leaderboard import _disk_mb, write_leaderboard

    keep = space.search.keep
    if keep == "all" or "://" in run_dir:
        return frame
    members = None
    if keep == "best":
        try:  # the trials the ensemble can use: the ones `ensemble.build` would choose with the space's settings
            import warnings

            from ensemble import select_members

            with warnings.catch_warnings():  # the ensemble step selects again and says it once
                warnings.simplefilter("ignore", UserWarning)
                members = [m.trial_id for m in select_members(run_dir).members]
        except ConfigError:
            members = None  # nothing to stack (or bad settings the ensemble step reports): every weight stays
    freed = keep_what_was_asked(frame, run_dir, keep=keep, members=members)
    if freed and "disk_mb" in frame:
        frame = frame.copy()
        frame["disk_mb"] = [_disk_mb(str(p)) if isinstance(p, str) else None for p in frame["path"]]
        write_leaderboard(frame, run_dir)
    return frame


def _publish(space: Space, run_dir: str, *, report: bool = True) -> None:
    """``report.html`` for people, and the ensemble to MLflow; a failure here is one line, the sweep's results stay."""
    if "://" in run_dir:
        return
    try:
        if report:
            from ._html import write_html_report

            t0 = time.perf_counter()
            path = write_html_report(run_dir)
            print(f"report: {path} (written in {time.perf_counter() - t0:.1f}s)")
    except Exception as exc:  # noqa: BLE001 - the report is a view; the sweep's files are what counts
        print(f"medsweep: warning: report.html not written ({_reason(exc)}); retry with python -m search.show {run_dir} --html", file=sys.stderr)
    cfg = space.tracking.mlflow
    if cfg is None:
        return
    from ._tracking import log_ensemble

    try:
        run_id = log_ensemble(cfg, run_dir=run_dir, sweep=space.name)
        if run_id:
            print(f"mlflow: ensemble logged to {cfg.uri}, experiment {cfg.experiment}, run {run_id}")
    except Exception as exc:  # noqa: BLE001 - a tracking server that went away must not fail a finished sweep
        print(f"medsweep: warning: the ensemble was not logged to MLflow at {cfg.uri} ({_reason(exc)})", file=sys.stderr)


def _reason(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def _saved_n_trials(text: str | None, *, default: int) -> int:
    """``search.n_trials`` of the sweep's own ``space.yaml``: a resumed sweep runs to the count it started with."""
    try:
        value = (yaml.safe_load(text or "") or {}).get("search", {}).get("n_trials")
    except (yaml.YAMLError, AttributeError):
        return default
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def build_tuner(
    space: Space,
    trainable: Any,
    *,
    run_dir: str,
    constants: Mapping[str, Any],
    verbose: bool = False,
    time_budget_s: float | None = None,
) -> Any:
    """Tune's ``Tuner`` for a new sweep: OptunaSearch (define-by-run), the scheduler, checkpoints, progress lines.

    ``time_budget_s`` is what the trials get (default the space's whole budget); without ``n_trials``
    Tune keeps sampling (``num_samples=-1``) until it is spent.
    """
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from ._disk import KeepCallback
    from ._progress import Progress

    cfg = space.search
    multi = cfg.multi_objective
    searcher = OptunaSearch(
        # the trainable reports to Tune
        space=DefineByRun(space.ordered_params(), {**constants, TUNE_KEY: True}, per_choice=space.per_choice),
        metric=[o.metric for o in cfg.objectives] if multi else cfg.metric,
        mode=[o.mode for o in cfg.objectives] if multi else cfg.mode,
        sampler=create_sampler(cfg.sampler, n_trials=cfg.n_trials),
    )
    from ._tracking import tracking_callbacks

    max_t = cfg.scheduler.max_t if cfg.scheduler.type == "asha" else None
    budget = time_budget_s if time_budget_s is not None else cfg.time_budget_s
    progress = Progress(
        metric=cfg.metric, mode=cfg.mode, n_trials=cfg.n_trials, max_t=max_t, shown=list(space.params), time_budget_s=budget
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=cfg.metric,  # the scheduler's (the first objective); the searcher has its own
            mode=cfg.mode,
            search_alg=searcher,
            scheduler=create_scheduler(cfg.scheduler),
            num_samples=cfg.n_trials if cfg.n_trials is not None else -1,
            max_concurrent_trials=cfg.max_concurrent,
            time_budget_s=budget,
            # A worker that already imported torch and timm runs the next trial: seconds, not tens, per trial on CPUs.
            reuse_actors=True,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=space.name,
            storage_path=run_dir.rsplit("/", 1)[0],
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            # The latest checkpoint only: it carries the best weights and the best epoch's predictions along
            # (search.keep: all also keeps the best epoch's own checkpoint, with its resume state).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)
            if cfg.keep != "all"
            else tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=cfg.metric, checkpoint_score_order=cfg.mode),
            callbacks=[progress, KeepCallback(cfg.keep, run_dir), *tracking_callbacks(space, run_dir=run_dir)],
            verbose=1 if verbose else 0,
        ),
    )


def _report(
    frame: Any,
    space: Space,
    *,
    paths: list[str],
    seconds: float,
    ensemble: bool,
    run_dir: str = "",
    n_trials: int | None = None,
    trials_budget: float | None = None,
    bag_dir: Path | None = None,
) -> int:
    """The end of a sweep for people: a summary line, the top of the leaderboard, the paths, the ensemble; the exit status."""
    from ._leaderboard import format_table

    n_trials = space.search.n_trials if n_trials is None else n_trials
    counts = frame["status"].value_counts().to_dict() if not frame.empty else {}
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    # Ctrl+C between two trials leaves none running: the trials not yet started are what is unfinished
    # (unless the time budget, not an interrupt, ended the sweep).
    budget = space.search.time_budget_s
    if trials_budget is None:
        trials_budget = trial_budget(budget, 0.0)
    if n_trials is not None and (budget is None or seconds < trials_budget * 0.98):
        counts["pending"] = counts.get("pending", 0) + max(0, n_trials - len(frame))
    disk = f"; {frame['disk_mb'].sum():.1f} MB on disk" if "disk_mb" in frame and frame["disk_mb"].notna().any() else ""
    print(f"\n[medsweep] sweep {space.name} done in {seconds:.0f}s: {summary or 'no trials'}{disk}")
    early = _early_end(space, frame, seconds=seconds, trials_budget=trials_budget, n_trials=n_trials)
    if early:
        print(f"[medsweep] {early}")
    print(format_table(frame, shown=list(space.params)))
    print("\nwritten:")
    for p in paths:
        print(f"  {p}")
    print("  (each trial's best-epoch predictions: the leaderboard's predictions_val and predictions_test columns)")
    unfinished = int(counts.get("running", 0) + counts.get("pending", 0))
    usable = int(counts.get("finished", 0) + counts.get("pruned", 0))
    later = f"build it later with python -m ensemble.build {run_dir}"
    if not ensemble:
        print(f"ensemble: skipped (--no-ensemble); {later}")
    elif unfinished:
        print(f"ensemble: skipped (the sweep is unfinished); {later} once it is done")
    elif not usable:
        print("ensemble: skipped (no trial finished)")
    elif "://" in run_dir:
        print("ensemble: skipped (the run folder is not local); copy it and run python -m ensemble.build on the copy")
    if unfinished:
        print(f"medsweep: interrupted with {unfinished} trials unfinished; continue the sweep with --resume", file=sys.stderr)
        return 130
    if not usable:
        print("medsweep: no trial finished; see the error column of the leaderboard", file=sys.stderr)
        return 1
    if ensemble and "://" not in run_dir:
        return _ensemble_step(run_dir, bag_dir=bag_dir)
    return 0


def _early_end(space: Space, frame: Any, *, seconds: float, trials_budget: float | None, n_trials: int | None) -> str | None:
    """Why a sweep with a budget ended before 90 % of it, in words (``None`` when it used it)."""
    if not trials_budget or seconds >= 0.9 * trials_budget:
        return None
    used = f"the trials used {seconds:.0f}s of their {trials_budget:.0f}s"
    if n_trials is not None and len(frame) >= n_trials:
        return f"ended early: all {n_trials} trials ran ({used}); leave out search.n_trials to keep sampling until the budget is spent"
    return f"ended early: every trial ended and the sampler proposed no new one ({used}); widen the space for more trials"


def _ensemble_step(run_dir: str, *, bag_dir: Path | None = None) -> int:
    """Stack the sweep's best trials into ``<run_dir>/ensemble``; the leaderboard is written already, so a
    failure here prints one line and sets the exit status, and the sweep's results stay.

    With bags (``bag_dir``) the ensemble stacks them on their out-of-fold predictions; should that fail,
    it stacks the trials on the validation split as without bagging.
    """
    from trainables.cli import cli_error_line

    print(flush=True)
    try:
        from ensemble.build import build_ensemble

        if bag_dir is not None:
            try:
                print(f"ensemble: stacking the bags on their out-of-fold predictions of train+val (rebuild with "
                      f"python -m ensemble.build {bag_dir} --out {Path(run_dir) / 'ensemble'})")
                build_ensemble(bag_dir, out=Path(run_dir) / "ensemble")
                return 0
            except ConfigError as exc:
                print(f"medsweep: warning: ensemble of the bags failed ({exc.message}); stacking the trials on validation instead",
                      file=sys.stderr)
        build_ensemble(run_dir)
    except ConfigError as exc:
        line = cli_error_line(exc, run_dir).replace("medsweep: error: ", "medsweep: error: ensemble step: ", 1)
        print(f"{line} (the sweep's leaderboard is kept; retry with python -m ensemble.build {run_dir})", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the sweep's results must survive a failing ensemble step
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        print(
            f"medsweep: error: ensemble step failed ({reason}); the sweep's leaderboard is kept; "
            f"see python -m ensemble.build {run_dir} --debug",
            file=sys.stderr,
        )
        return 1
    return 0
