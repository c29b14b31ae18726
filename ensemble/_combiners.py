"""The stacking's combiners: each a ``Combiner`` (grid / fit / combine) in one registry, fitted on member
probabilities with numpy and scikit-learn, and applied with numpy only on the JSON-plain parameters."""

from __future__ import annotations

import math
import warnings
from numbers import Integral
from typing import Any, ClassVar

import numpy as np

from trainables import Interval, Registry

from ._metrics import LOWER_IS_BETTER, score

__all__ = ["COMBINER", "COMBINERS", "Combiner", "register_combiner"]

# Registration order is simplicity order: a tie in CV score goes to the earlier one. `best` (the single member
# that scores best on the training folds) is a candidate so that the chosen combiner never scores below it out of fold.
COMBINER = Registry("combiner", field="combiners")
COMBINERS = COMBINER  # the names, in simplicity order: mean, best, greedy, logistic, mlp
register_combiner = COMBINER.register

# Probability floor for the meta-learners' features: keeps log/logit within about +-16, so a member that
# writes exact 0/1 (float32 softmax) does not make an outlier that dominates the standardised features.
_FEATURE_EPS = 1e-7
_TIE_TOL = 1e-12
# The meta-learners (logistic, mlp) fit on at most this many rows, drawn stratified by class: the MLP's lbfgs
# took 10 s a fit on 8,000 rows on one thread here, and the stacking cross-validates 3 settings x 5 folds,
# which ran a 900 s sweep on a 10,000-image validation split 16 % over its budget. Validation splits up to it
# (every bench set's) are fitted whole; a few thousand rows are plenty for a head on a few members' logits.
HEAD_MAX_ROWS = 2000


def _grid(name: str, mlp_hidden: int, greedy_rounds: int) -> list[dict[str, Any]]:
    """A combiner's settings to cross-validate, simplest (most regularised) first so ties go to it."""
    entry = COMBINER.get(name)
    given = {"hidden": mlp_hidden, "rounds": greedy_rounds}
    return COMBINER.create(name, **{k: v for k, v in given.items() if k in entry.options}).grid()


# ---------------------------------------------------------------- combiners: fit


def _fit_grid(name: str, grid: list[dict[str, Any]], P: np.ndarray, y: np.ndarray, task: str, metric: str, seed: int) -> list[dict[str, Any]]:
    """Fitted parameters of one combiner at every setting of its grid on (P, y), in grid order."""
    return COMBINER.create(name).fit_grid(grid, P, y, task=task, metric=metric, seed=seed)


def _fit_combiner(name: str, settings: dict[str, Any], P: np.ndarray, y: np.ndarray, task: str, metric: str, seed: int) -> dict[str, Any]:
    """Fitted parameters of one combiner on (P, y), as lists and floats."""
    return COMBINER.create(name).fit(settings, P, y, task=task, metric=metric, seed=seed)


def _fit_best(P: np.ndarray, y: np.ndarray, task: str, metric: str) -> dict[str, Any]:
    """The one member with the best ``metric`` on (P, y) (ties: the lower index), as one-hot weights."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    scores = []
    for i in range(P.shape[0]):
        s = score(P[i], y, task=task, metric=metric)
        scores.append(-math.inf if math.isnan(s) else sign * s)
    pick = int(np.argmax(scores))
    weights = np.zeros(P.shape[0])
    weights[pick] = 1.0
    return {"member": pick, "weights": weights.tolist()}


def _fit_greedy(P: np.ndarray, y: np.ndarray, task: str, rounds: int, metric: str) -> dict[str, Any]:
    """Caruana et al. (2004) selection with replacement: from an empty ensemble, add the member whose addition
    gives the best metric of the averaged probabilities, ``rounds`` times; weights = counts / rounds.
    Ties go to the lower member index (auto-sklearn breaks them at random)."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    m = P.shape[0]
    counts = np.zeros(m, dtype=int)
    total = np.zeros(P.shape[1:])
    if metric == "auroc":
        return _fit_greedy_auroc(P, y, task, rounds)
    for r in range(rounds):
        best, pick = -math.inf, 0
        for i in range(m):
            s = score((total + P[i]) / (r + 1), y, task=task, metric=metric)
            s = -math.inf if math.isnan(s) else sign * s
            if s > best:
                best, pick = s, i
        counts[pick] += 1
        total += P[pick]
    return {"counts": counts.tolist(), "weights": (counts / rounds).tolist()}


def _auroc_columns(y: np.ndarray, task: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(column, positive rows, negative rows) of every column the macro AUROC of ``_metrics.score`` averages."""
    if task == "multi-label":
        cols = [(j, np.flatnonzero(y[:, j] == 1), np.flatnonzero(y[:, j] == 0)) for j in range(y.shape[1])]
    elif task == "binary":
        cols = [(1, np.flatnonzero(y == 1), np.flatnonzero(y == 0))]
    else:
        k = int(y.max()) + 1 if y.size else 0
        cols = [(j, np.flatnonzero(y == j), np.flatnonzero(y != j)) for j in range(k)]
    return [c for c in cols if c[1].size and c[2].size]  # a column with one class is undefined (nan), left out


def _fit_greedy_auroc(P: np.ndarray, y: np.ndarray, task: str, rounds: int) -> dict[str, Any]:
    """:func:`_fit_greedy` for the macro AUROC, every member's candidate scored in one pass per column.

    Dividing by the number of picks does not change ranks, so the candidates are the running sums (exact
    for float32 member outputs); per column, every candidate's negatives and positives are sorted in one
    call each and the positives placed among the negatives by binary search (the Mann-Whitney U with ties
    counted half, as the scorer does): the same picks as scoring each candidate, several times faster.
    """
    m = P.shape[0]
    counts = np.zeros(m, dtype=int)
    cols = _auroc_columns(y, task)
    # each column's positive and negative rows, contiguous, and the running sums over them
    parts = [(np.ascontiguousarray(P[:, pos, j]), np.ascontiguousarray(P[:, neg, j])) for j, pos, neg in cols]
    sums = [(np.zeros(pos.size), np.zeros(neg.size)) for _, pos, neg in cols]
    for _ in range(rounds):
        pick = 0
        if cols:
            aucs = np.empty((m, len(cols)))
            for c, ((p_pos, p_neg), (s_pos, s_neg)) in enumerate(zip(parts, sums)):
                neg_sorted = np.sort(s_neg + p_neg, axis=1)
                # sorted keys: numpy's binary search starts from the previous key's place (fewer cache misses)
                pos_sorted = np.sort(s_pos + p_pos, axis=1)
                # _metrics._sorted_negatives_auroc for every member at once (the per-call overhead was half the time)
                at = np.stack([np.searchsorted(neg_sorted[i], pos_sorted[i], side="left") for i in range(m)])
                below = at.sum(1).astype(float)
                tied = np.take_along_axis(neg_sorted, np.minimum(at, neg_sorted.shape[1] - 1), axis=1) == pos_sorted
                for i in np.flatnonzero(tied.any(1)):  # ties with negatives count half
                    keys = pos_sorted[i][tied[i]]
                    below[i] += 0.5 * float((np.searchsorted(neg_sorted[i], keys, side="right") - at[i][tied[i]]).sum())
                aucs[:, c] = below / (pos_sorted.shape[1] * neg_sorted.shape[1])
            pick = int(np.argmax(aucs.mean(1)))  # the first of equal scores: the lower member index
        counts[pick] += 1
        for (p_pos, p_neg), (s_pos, s_neg) in zip(parts, sums):
            s_pos += p_pos[pick]
            s_neg += p_neg[pick]
    return {"counts": counts.tolist(), "weights": (counts / rounds).tolist()}


# The multi-label heads: one small model per label, all labels (and every grid setting) fitted together.
# scikit-learn per label was labels x folds x settings separate fits: 5 members x 12,800 rows x 14 labels
# took over 13 minutes, nearly all of it in 256-unit lbfgs MLPs.
_ML_MAX_HIDDEN = 16  # hidden units per label's MLP (a label's features are its members' logits: few, correlated)
_ML_NEWTON_ITERS = 50
_ML_MLP_MAX_EPOCHS = 40
_ML_MLP_PATIENCE = 4
_ML_MLP_STEPS_PER_EPOCH = 16  # batch = rows / 16: an epoch costs the same optimisation progress at any size
_ML_MLP_LR = 2e-2
_ML_HOLDOUT = 0.1  # share of the training rows that decides early stopping


def _label_features(P: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per label: standardised member logits ``Z`` (K, N, M), known-row weights ``w`` (K, N), targets
    ``t`` (K, N), and the standardisation ``mean``, ``scale`` (K, M) over the known rows only.

    Masked entries are zeroed before anything is computed from them, so their values cannot matter."""
    known = (y >= 0).T  # (K, N)
    X = np.where(known[:, :, None], _logit(P).transpose(2, 1, 0), 0.0)
    w = known.astype(float)
    n_known = np.maximum(w.sum(1), 1.0)[:, None]
    mean = X.sum(1) / n_known
    scale = np.sqrt(np.maximum((np.where(known[:, :, None], X - mean[:, None, :], 0.0) ** 2).sum(1) / n_known, 0.0))
    scale[scale < 1e-12] = 1.0
    Z = np.where(known[:, :, None], (X - mean[:, None, :]) / scale[:, None, :], 0.0)
    return Z, w, (y.T == 1).astype(float), mean, scale


def _fit_label_heads(name: str, grid: list[dict[str, Any]], P: np.ndarray, y: np.ndarray, seed: int) -> list[dict[str, Any]]:
    """Multi-label logistic or MLP heads, one per label, for every setting in ``grid``: ``[{"labels": [...]}]``.

    A label whose known rows hold one class gets None (its members are averaged), as :func:`_fit_head` does.
    """
    Z, w, t, mean, scale = _label_features(P, y)
    k = Z.shape[0]
    pos = (w * t).sum(1)
    valid = (pos > 0) & (pos < w.sum(1))
    out: list[list[dict[str, Any] | None]] = [[None] * k for _ in grid]
    if valid.any():
        idx = np.flatnonzero(valid)
        if name == "logistic":
            fitted = _newton_logistic(Z[idx], w[idx], t[idx], [float(s["C"]) for s in grid])
        else:
            fitted = _batched_mlp(Z[idx], w[idx], t[idx], [float(s["alpha"]) for s in grid], [int(s["hidden"]) for s in grid], seed)
        for g, heads in enumerate(fitted):
            for j, head in zip(idx, heads):
                out[g][j] = {"mean": mean[j].tolist(), "scale": scale[j].tolist(), "classes": [0, 1], **head}
    return [{"labels": labels} for labels in out]


def _newton_logistic(Z: np.ndarray, w: np.ndarray, t: np.ndarray, Cs: list[float]) -> list[list[dict[str, Any]]]:
    """L2 logistic regressions, one per label, by Newton's method on all labels at once, warm-started along ``Cs``.

    The objective is scikit-learn's ``LogisticRegression(C)``: ``C * sum(log loss) + ||coef||^2 / 2``, the
    intercept unpenalised; it is strictly convex, so the solution is the one lbfgs approaches (closer: lbfgs
    stops at a gradient tolerance). Each step halves until the objective decreases, per label.
    """
    k, n, m = Z.shape
    A = np.concatenate([Z, np.ones((k, n, 1))], axis=2)  # (K, N, M + 1), the intercept last
    penal = np.r_[np.ones(m), 0.0]
    beta = np.zeros((k, m + 1))
    out = []

    def objective(b: np.ndarray, C: float) -> np.ndarray:
        z = np.einsum("knf,kf->kn", A, b)
        return C * (w * (np.logaddexp(0.0, z) - t * z)).sum(1) + 0.5 * (penal * b * b).sum(1)

    for C in Cs:
        f = objective(beta, C)
        for _ in range(_ML_NEWTON_ITERS):
            z = np.einsum("knf,kf->kn", A, beta)
            p = _sigmoid(z)
            grad = C * np.einsum("knf,kn->kf", A, w * (p - t)) + penal * beta
            hess = C * np.matmul(A.transpose(0, 2, 1) * (w * p * (1.0 - p))[:, None, :], A)
            hess[:, np.arange(m + 1), np.arange(m + 1)] += penal + 1e-10
            step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
            size = np.ones(k)
            for _halving in range(30):
                trial = beta - size[:, None] * step
                f_trial = objective(trial, C)
                worse = f_trial > f + 1e-12 * np.abs(f)
                if not worse.any():
                    break
                size[worse] *= 0.5
            beta, f = np.where(worse[:, None], beta, trial), np.where(worse, f, f_trial)  # a label that cannot descend has converged
            # the Newton decrement: how far the objective is from its minimum, to second order
            if np.max(np.einsum("kf,kf->k", grad, step)) < 1e-10 * max(1.0, float(np.abs(f).max())):
                break
        out.append([{"coef": [b[:m].tolist()], "intercept": [float(b[m])]} for b in beta])
    return out


def _batched_mlp(Z: np.ndarray, w: np.ndarray, t: np.ndarray, alphas: list[float], hiddens: list[int], seed: int) -> list[list[dict[str, Any]]]:
    """One-hidden-layer relu MLPs, one per label and setting, trained together (torch, batched matrix products).

    The loss is scikit-learn's MLPClassifier's: mean log loss + ``alpha / (2 * rows) * ||weights||^2``.
    Adam on minibatches of a fixed share of the rows, early-stopped per model on a held-out tenth of the
    training rows (the weights of its best held-out epoch are kept): a few hundred steps where lbfgs on a
    256-unit network took minutes per label. Initialisation (Glorot uniform, as scikit-learn) depends on the
    seed and the label only, so a setting fitted alone gets the weights it gets inside the grid.
    """
    import torch

    k, n, m = Z.shape
    hidden = max(hiddens)
    G = k * len(alphas)
    lab = np.tile(np.arange(k), len(alphas))  # group g: label lab[g], setting g // k
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # validation-sized products: one thread, as the BLAS limit in fit()
    try:
        rng = np.random.default_rng(seed)
        order = rng.permutation(n)
        n_hold = int(round(_ML_HOLDOUT * n)) if n >= 50 else 0
        hold, train = np.sort(order[:n_hold]), order[n_hold:]
        Zt = torch.from_numpy(Z.astype(np.float32))
        wt = torch.from_numpy(w.astype(np.float32))
        tt = torch.from_numpy(t.astype(np.float32))
        n_known = np.maximum(w[:, train].sum(1), 1.0)[lab]
        decay = torch.tensor([a / (2.0 * nk) for a, nk in zip(np.repeat(alphas, k), n_known)], dtype=torch.float32)
        mask = torch.zeros(G, 1, hidden)  # a setting with fewer hidden units uses the first ones only
        for g, h in enumerate(np.repeat(hiddens, k)):
            mask[g, :, : int(h)] = 1.0
        b1_bound, b2_bound = math.sqrt(6.0 / (m + hidden)), math.sqrt(6.0 / (hidden + 1))
        init = []
        for j in range(k):
            gen = np.random.default_rng([seed, j])
            init.append((gen.uniform(-b1_bound, b1_bound, (m, hidden)), gen.uniform(-b1_bound, b1_bound, hidden),
                         gen.uniform(-b2_bound, b2_bound, (hidden, 1)), gen.uniform(-b2_bound, b2_bound, 1)))
        W1 = torch.tensor(np.stack([init[j][0] for j in lab]), dtype=torch.float32).mul_(mask).requires_grad_()
        b1 = torch.tensor(np.stack([init[j][1] for j in lab])[:, None, :], dtype=torch.float32).mul_(mask).requires_grad_()
        W2 = torch.tensor(np.stack([init[j][2] for j in lab]), dtype=torch.float32).mul_(mask.transpose(1, 2)).requires_grad_()
        b2 = torch.tensor(np.stack([init[j][3] for j in lab])[:, None, :], dtype=torch.float32).requires_grad_()
        params = [W1, b1, W2, b2]
        opt = torch.optim.Adam(params, lr=_ML_MLP_LR)
        lab_t = torch.from_numpy(lab)

        def logits(rows: torch.Tensor) -> torch.Tensor:
            x = Zt[:, rows][lab_t]  # (G, B, M)
            h = torch.relu(torch.baddbmm(b1, x, W1)) * mask
            return torch.baddbmm(b2, h, W2).squeeze(-1)

        def bce(z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            wr, tr = wt[:, rows][lab_t], tt[:, rows][lab_t]
            per = torch.nn.functional.binary_cross_entropy_with_logits(z, tr, reduction="none")
            return (per * wr).sum(1) / wr.sum(1).clamp_min(1.0)

        batch = max(1, min(len(train), math.ceil(len(train) / _ML_MLP_STEPS_PER_EPOCH)))
        hold_t = torch.from_numpy(hold)
        best_loss = torch.full((G,), math.inf)
        best = [p.detach().clone() for p in params]
        stale = torch.zeros(G, dtype=torch.long)
        for _epoch in range(_ML_MLP_MAX_EPOCHS):
            perm = torch.from_numpy(train[rng.permutation(len(train))])
            for b in range(0, len(perm), batch):
                rows = perm[b : b + batch]
                loss = bce(logits(rows), rows) + decay * ((W1 * W1).sum((1, 2)) + (W2 * W2).sum((1, 2)))
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
            if not n_hold:
                continue  # too few rows to hold some out: the last epoch's weights
            with torch.no_grad():
                held = bce(logits(hold_t), hold_t)
                better = held < best_loss - 1e-6
                best_loss = torch.where(better, held, best_loss)
                for kept, p in zip(best, params):
                    kept[better] = p[better]
                stale = torch.where(better, torch.zeros_like(stale), stale + 1)
            if bool((stale >= _ML_MLP_PATIENCE).all()):
                break
        if not n_hold:
            best = [p.detach() for p in params]
    finally:
        torch.set_num_threads(threads)
    W1n, b1n, W2n, b2n = (p.double().numpy() for p in best)
    out = []
    for s, h in enumerate(hiddens):
        heads = []
        for j in range(k):
            g = s * k + j
            heads.append({
                "coefs": [W1n[g][:, :h].tolist(), W2n[g][:h].tolist()],
                "intercepts": [b1n[g, 0, :h].tolist(), b2n[g, 0].tolist()],
                "activation": "relu",
                "out_activation": "logistic",
            })
        out.append(heads)
    return out


def _fit_head(name: str, settings: dict[str, Any], X: np.ndarray, y: np.ndarray, seed: int) -> dict[str, Any] | None:
    """A logistic or MLP meta-learner on standardised features; None (average the members) with one class."""
    from sklearn.exceptions import ConvergenceWarning

    if len(np.unique(y)) < 2:
        return None
    mean = X.mean(0)
    scale = X.std(0)
    scale[scale < 1e-12] = 1.0
    Z = (X - mean) / scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if name == "logistic":
            from sklearn.linear_model import LogisticRegression

            # lbfgs, L2; with 3+ classes scikit-learn fits the multinomial (softmax) model
            model = LogisticRegression(C=float(settings["C"]), max_iter=1000).fit(Z, y)
            weights = {"coef": model.coef_.tolist(), "intercept": model.intercept_.tolist()}
        else:
            from sklearn.neural_network import MLPClassifier

            # lbfgs: full-batch, deterministic and fast on validation-sized data; no early stopping
            model = MLPClassifier(
                hidden_layer_sizes=(int(settings["hidden"]),),
                activation="relu",
                solver="lbfgs",
                alpha=float(settings["alpha"]),
                max_iter=300,
                early_stopping=False,
                random_state=seed,
            ).fit(Z, y)
            weights = {
                "coefs": [w.tolist() for w in model.coefs_],
                "intercepts": [b.tolist() for b in model.intercepts_],
                "activation": "relu",
                "out_activation": model.out_activation_,
            }
    return {"mean": mean.tolist(), "scale": scale.tolist(), "classes": [int(c) for c in model.classes_], **weights}


# ---------------------------------------------------------------- combiners: predict (numpy only)


def _combine(name: str, params: dict[str, Any], P: np.ndarray, task: str) -> np.ndarray:
    """(N, K) combined probabilities before normalisation and temperature."""
    if name not in COMBINER:
        raise ValueError(f"unknown combiner {name!r}")
    return COMBINER.create(name).combine(params, P, task=task)


# ---------------------------------------------------------------- the combiners


class Combiner:
    """A way to combine members' probabilities ``P`` (n_members, N, K) into one ``(N, K)``.

    ``grid()`` lists the settings to cross-validate (simplest first); ``fit`` returns JSON-ready fitted
    parameters for one setting; ``combine`` applies them with numpy only, so a bundle rebuilt from its
    JSON predicts the same. The constructor's keyword options are what the registry declares.
    """

    name: ClassVar[str] = ""

    def grid(self) -> list[dict[str, Any]]:
        return [{}]

    def fit(self, settings: dict[str, Any], P: np.ndarray, y: np.ndarray, *, task: str, metric: str, seed: int) -> dict[str, Any]:
        raise NotImplementedError

    def fit_grid(self, grid: list[dict[str, Any]], P: np.ndarray, y: np.ndarray, *, task: str, metric: str, seed: int) -> list[dict[str, Any]]:
        return [self.fit(settings, P, y, task=task, metric=metric, seed=seed) for settings in grid]

    def combine(self, params: dict[str, Any], P: np.ndarray, *, task: str) -> np.ndarray:
        raise NotImplementedError


@register_combiner("mean")
class MeanCombiner(Combiner):
    """The members' plain average."""

    name = "mean"

    def fit(self, settings, P, y, *, task, metric, seed):
        return {}

    def combine(self, params, P, *, task):
        return P.mean(0)


class _WeightedCombiner(Combiner):
    """Fitted params ``{"weights": [one per member]}``: a weighted mean of the members."""

    def combine(self, params, P, *, task):
        w = np.asarray(params["weights"], dtype=float)
        if w.shape != (P.shape[0],):
            raise ValueError(f"{self.name} weights have shape {w.shape}; expected ({P.shape[0]},)")
        return np.tensordot(w, P, axes=1) / w.sum()


@register_combiner("best")
class BestCombiner(_WeightedCombiner):
    """The single member that scores best on the fitting rows (one-hot weights)."""

    name = "best"

    def fit(self, settings, P, y, *, task, metric, seed):
        return _fit_best(P, y, task, metric)


@register_combiner("greedy", options={"rounds": [Interval(Integral, 1, None, closed="left")]})
class GreedyCombiner(_WeightedCombiner):
    """Caruana's greedy selection with replacement for ``rounds`` rounds."""

    name = "greedy"

    def __init__(self, *, rounds: int = 25) -> None:
        self.rounds = rounds

    def grid(self):
        return [{"rounds": self.rounds}]

    def fit(self, settings, P, y, *, task, metric, seed):
        return _fit_greedy(P, y, task, int(settings["rounds"]), metric)


def capped_rows(y: np.ndarray, *, limit: int = HEAD_MAX_ROWS, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``limit`` rows of ``y``, stratified by class (multi-label: by its first
    positive label, or none), each class keeping its share and at least one row; all rows when there are few.

    Example:
        >>> y = np.array([0] * 9000 + [1] * 1000)
        >>> rows = capped_rows(y, limit=2000)
        >>> len(rows), int((y[rows] == 1).sum())
        (2000, 200)
    """
    y = np.asarray(y)
    n = len(y)
    if n <= limit:
        return np.arange(n)
    strata = y if y.ndim == 1 else np.where((y > 0).any(1), np.argmax(y > 0, axis=1), -1)
    rng = np.random.default_rng(seed)
    classes, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    take = np.maximum(1, np.floor(counts * limit / n).astype(int))
    keep = [rng.choice(np.flatnonzero(inverse == c), size=min(int(t), int(k)), replace=False)
            for c, (t, k) in enumerate(zip(take, counts))]
    return np.sort(np.concatenate(keep))


class _HeadCombiner(Combiner):
    """A meta-learner on the members' logits (one per label for multi-label), fitted on ``capped_rows``."""

    def fit(self, settings, P, y, *, task, metric, seed):
        rows = capped_rows(y, seed=seed)
        P, y = P[:, rows], y[rows]
        if task == "multi-label":
            return _fit_label_heads(self.name, [settings], P, y, seed)[0]
        return _fit_head(self.name, settings, _features(P, task), y, seed)

    def fit_grid(self, grid, P, y, *, task, metric, seed):
        rows = capped_rows(y, seed=seed)
        P, y = P[:, rows], y[rows]
        if task == "multi-label":  # every setting in one batched pass
            return _fit_label_heads(self.name, grid, P, y, seed)
        return super().fit_grid(grid, P, y, task=task, metric=metric, seed=seed)

    def combine(self, params, P, *, task):
        k = P.shape[2]
        if task == "multi-label":
            labels = params["labels"]
            if len(labels) != k:
                raise ValueError(f"{len(labels)} per-label models for {k} labels")
            out = np.empty(P.shape[1:])
            for j, head in enumerate(labels):
                if head is None:
                    out[:, j] = P[:, :, j].mean(0)
                else:
                    cols = _head_proba(head, _logit(P[:, :, j]).T)
                    out[:, j] = cols[:, list(head["classes"]).index(1)]
            return out
        cols = _head_proba(params, _features(P, task))
        out = np.zeros(P.shape[1:])
        out[:, np.asarray(params["classes"], dtype=int)] = cols  # classes absent from the validation split get 0
        return out


@register_combiner("logistic")
class LogisticCombiner(_HeadCombiner):
    """L2 logistic regression, ``C`` cross-validated."""

    name = "logistic"

    def grid(self):
        return [{"C": c} for c in (0.1, 1.0, 10.0)]


@register_combiner("mlp", options={"hidden": [Interval(Integral, 1, None, closed="left")]})
class MLPCombiner(_HeadCombiner):
    """A one-hidden-layer MLP, its L2 ``alpha`` cross-validated."""

    name = "mlp"

    def __init__(self, *, hidden: int = 256) -> None:
        self.hidden = hidden

    def grid(self):
        # scikit-learn divides alpha by the number of rows; on validation-sized data (hundreds of rows) the
        # usual 1e-4 leaves a 256-unit MLP free to memorise (CV log loss 3-7 against logistic's 0.76 in a
        # 4-class trial), while alpha 1-10 makes it competitive, so the grid spans the strong end
        return [{"alpha": a, "hidden": self.hidden} for a in (10.0, 1.0, 1e-2)]


def _head_proba(head: dict[str, Any], X: np.ndarray) -> np.ndarray:
    """The meta-learner's class probabilities, columns in ``head['classes']`` order, as scikit-learn computes them."""
    mean = np.asarray(head["mean"], dtype=float)
    scale = np.asarray(head["scale"], dtype=float)
    if mean.shape != (X.shape[1],) or scale.shape != mean.shape:
        raise ValueError(f"meta-learner expects {mean.shape[0] if mean.ndim else '?'} features; got {X.shape[1]}")
    h = (X - mean) / scale
    if "coef" in head:
        z = h @ np.asarray(head["coef"], dtype=float).T + np.asarray(head["intercept"], dtype=float)
    else:
        coefs, intercepts = head["coefs"], head["intercepts"]
        for i, (w, b) in enumerate(zip(coefs, intercepts)):
            h = h @ np.asarray(w, dtype=float) + np.asarray(b, dtype=float)
            if i < len(coefs) - 1:
                h = np.maximum(h, 0.0)  # relu
        z = h
    if z.shape[1] == 1:  # binary: one logistic output for the second class
        p = _sigmoid(z[:, 0])
        return np.stack([1.0 - p, p], axis=1)
    return _softmax(z)


def _features(P: np.ndarray, task: str) -> np.ndarray:
    """Meta-learner features, (N, F): the members' logits recovered from their probabilities.

    Binary: each member's log-odds of the positive class (F = members). Multi-class and ordinal: each
    member's log-probabilities (F = members x K), which are its logits up to a per-row shift; a linear model
    on them is a weighted geometric pool of the members, and unlike raw probabilities they do not saturate
    near 0 and 1, where a confident member's evidence lies.
    """
    if task == "binary":
        return _logit(P[:, :, 1]).T
    m, n, k = P.shape
    return np.log(np.clip(P, _FEATURE_EPS, 1.0)).transpose(1, 0, 2).reshape(n, m * k)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _FEATURE_EPS, 1.0 - _FEATURE_EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z, dtype=float)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _normalise(probs: np.ndarray, task: str) -> np.ndarray:
    if task == "multi-label":
        return np.clip(probs, 0.0, 1.0)
    return probs / probs.sum(1, keepdims=True)
