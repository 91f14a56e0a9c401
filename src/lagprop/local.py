"""Algorithm 2 (local computation of saddle points), level by level at dense-matrix speed.

Algorithm 2 visits the neurons one by one, example by example (a Gauss-Seidel sweep); the
literal loop, with the printed typos fixed, is :mod:`lagprop.local_reference`, the oracle.
A visit of neuron i (example kappa) reads only

* its own x_i, lambda_i, bias and target, and its stored pre-activation f_i;
* its parents' x_j and the weights w_ij of the arcs into it;
* its children's *message* m_r = lambda~_r sigma'(f_r), lambda~_r = lambda_r + rho (x_r -
  sigma(f_r)) (computed from the child's own x_r, lambda_r, f_r), and the weights w_ri of
  the arcs out of it;

and writes only its own x_i, lambda_i, f_i and the weights into i.  So two neurons that
share no arc commute, and a set of pairwise non-adjacent neurons can be visited at once
with exactly the sequential result (MATH.md).  The compiled network's groups are such sets
for a DAG (topological levels, possibly split by role and activation; the layers of an
MLP), so one sweep here is a loop over the groups in topological order or its reverse,
each group updated by block products: per sweep every block is used for the
pre-activations, the child sums and the weight gradient, as backpropagation uses each
block once forward and twice backward -- Theta(|A| l).

The visit of neuron i (paper Algorithm 2, lines 5-20, with f the stored pre-activation)::

    c_i   = sum_{r in ch(i)} w_ri m_r                     children's messages (lines 8-10)
    f_i   = b_i + sum_{j in pa(i)} w_ij x_j               reset, then summed (lines 13-15)
    G_i   = x_i - sigma(f_i)                              (line 16, Eq. 5)
    dx_i  = lambda_i + rho G_i - c_i + [O] dv/dx_i + [H] alpha sign(x_i)     (Eq. 4)
    x_i  <- x_i - mu_x dx_i           (then the l1 soft threshold on hidden x, prox mode)
    lambda_i <- lambda_i + mu_lambda G_i
    m_i   = (lambda_i + rho (x_i - sigma(f_i))) sigma'(f_i)     at the new x_i, lambda_i
    dL/dw_ij += -m_i x_j                                  (line 20, Eq. 3)

Order.  Parents first (topological order) or children first (reverse): both are
Gauss-Seidel sweeps in which non-adjacent neurons commute, both are checked against the
reference.  The trainer visits children first by default: then one sweep carries the
teacher's signal from the outputs to the first layer, as backpropagation's backward pass
does, while x is predicted by the forward pass; parents first, the hidden neurons read
their children's messages from before the sweep; on digits (64-100-10, batches of 64,
Adam 1e-3, 2 sweeps, lambda stored between visits) parents-first training drifted into
divergence after twelve epochs (test accuracy 0.94, then 0.59 at epoch 30) where children
first reached 0.967 with the same flags.  Children first is also cheaper: a neuron posts
its new message to its parents' child sums ("mailbox") in the same block pass that forms
its weight gradient, so a sweep costs per block one pre-activation product, one gather of
the messages, one weight-gradient reduction and one scatter into the parents -- what
backpropagation's forward and backward passes cost.

Weight schedules: ``'example'`` applies each example's gradient before the next example
(line 20 inside the loop over examples: on-line learning); ``'sweep'`` sums over the
examples of the sweep and steps once (Algorithm 1's accumulation).  Parents first, a
neuron's weights are read within an example only by the neuron itself (before it changes
them) and by its parents (visited before it), so applying the example's whole gradient at
the end of its pass equals line 20 at each visit.  Children first, the parents read w_ij
after i's visit; the engine then applies the example's changes after its pass (the
reference's ``weights_at='example'``): the only place it departs from the printed line 20.

The loss gradient dv/dx of the outputs is read at the start of an example's pass (for the
per-output squared error this is the value at the output's visit, since only the output
changes its x; for the soft-max cross-entropy it fixes which outputs' x the normaliser
reads).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .dynamics import Dynamics
from .errors import ConfigError, CycleError
from .lagrangian import loss_grad, soft_threshold
from .network import Network
from .train import Trainer, register_method

SCHEDULES = ("sweep", "example")
ORDERS = ("backward", "forward")  # children first (the trainer's default) or parents first


@dataclass
class LocalState:
    """Per group: x, lambda, the stored pre-activation f and the message m each neuron offers."""

    xs: list[Tensor]            # group 0: the inputs (data)
    lams: list[Tensor | None]
    fs: list[Tensor | None]
    ms: list[Tensor | None]

    def rows(self, k: int) -> LocalState:
        """Example k alone (copies), for the per-example schedule."""
        def take(ts):
            return [None if t is None else t[k:k + 1].clone() for t in ts]
        return LocalState(take(self.xs), take(self.lams), take(self.fs), take(self.ms))

    def put_rows(self, k: int, row: LocalState) -> None:
        for mine, theirs in ((self.xs, row.xs), (self.lams, row.lams), (self.fs, row.fs), (self.ms, row.ms)):
            for g in range(1, len(mine)):
                mine[g][k] = theirs[g][0]


def check_levels(net: Network) -> None:
    """The groups must be pairwise non-adjacent sets in topological order (every arc forward)."""
    if not net.acyclic:
        raise CycleError("the local engine visits the neurons level by level and needs a DAG; "
                         "this graph has a cycle: train it with --method mdmm")
    for blk in net.blocks:
        if blk.src >= blk.dst:
            raise ConfigError(f"groups {blk.src} -> {blk.dst} are not in topological order; the local "
                              "engine cannot update them together")


def message(net: Network, g: int, x: Tensor, lam: Tensor, f: Tensor, rho: float) -> Tensor:
    """m = lambda~ sigma'(f) with lambda~ = lambda + rho (x - sigma(f)): what a neuron tells its parents."""
    act = net.acts[g]
    s = act.fn(f)
    lt = lam + rho * (x - s) if rho else lam
    return lt * act.derivative(f, s)


def init_state(net: Network, xs: Sequence[Tensor], lams: Sequence[Tensor | None], rho: float,
               base: Sequence[Tensor | None] | None = None) -> LocalState:
    """Stored f from the given x (a fresh visit computes it the same way), and the messages."""
    with torch.no_grad():
        fs = net.preactivations(xs, skip_src=0 if base is not None else None, base=base)
        xs, lams = list(xs), list(lams)
        ms: list[Tensor | None] = [None] + [message(net, g, xs[g], lams[g], fs[g], rho)
                                            for g in range(1, len(net.groups))]
    return LocalState(xs, lams, fs, ms)


Blocks = tuple[dict[int, list], dict[int, list]]


def _by_group(net: Network) -> Blocks:
    out_of: dict[int, list] = {}
    into: dict[int, list] = {}
    for blk in net.blocks:
        out_of.setdefault(blk.src, []).append(blk)
        into.setdefault(blk.dst, []).append(blk)
    return out_of, into


def input_part(net: Network, x_in: Tensor) -> tuple[list[Tensor | None], dict[int, Tensor]]:
    """Bias plus the input arcs' part of f, which only a weight step changes, and the
    inputs gathered per sparse input block (reused by the weight gradient)."""
    base: list[Tensor | None] = [None] + [net.bias_of(g).expand(x_in.shape[0], -1)
                                          for g in range(1, len(net.groups))]
    gathered: dict[int, Tensor] = {}
    for blk in net.blocks:
        if blk.src != 0:
            continue
        w = net.weights[blk.param]
        if blk.dense:
            base[blk.dst] = torch.addmm(base[blk.dst], x_in, w.t())
        else:
            xg = gathered[blk.param] = x_in[:, blk.src_idx]
            base[blk.dst] = base[blk.dst].index_add(1, blk.dst_idx, xg * w)
    return base, gathered


def visit_group(net: Network, st: LocalState, g: int, dv: Tensor | None, alpha: Tensor | float | None,
                dyn: Dynamics, base: Tensor | None = None, gathered: dict[int, Tensor] | None = None,
                blocks: Blocks | None = None, mailbox: list[Tensor | None] | None = None,
                grad_scale: float | None = None) -> Tensor:
    """Visit every neuron of group g at once (Algorithm 2, lines 5-20); returns G (line 16).

    ``base``: bias plus the input arcs' part of f (:func:`input_part`), valid while the
    weights do not change; without it f is summed over every arc into g.  ``mailbox``
    (children-first sweeps): the children's messages already summed per parent when the
    children were visited; the visit reads ``mailbox[g]`` and posts its own message to its
    parents' entries.  Without it the child sum is formed here from the children's stored
    messages.  ``grad_scale``: add ``grad_scale`` times the gradient of the weights into g
    (line 20) to their ``.grad``.
    """
    out_of, into = blocks if blocks is not None else _by_group(net)
    x, lam = st.xs[g], st.lams[g]
    if mailbox is not None:  # lines 8-10: the children's messages over the arcs out of g
        c = mailbox[g]
    else:
        c = None
        for blk in out_of.get(g, ()):
            c = net._block_child(blk, st.ms[blk.dst], c)
    f = base if base is not None else net.bias_of(g).expand(x.shape[0], -1)  # lines 13-15, reset
    xg: dict[int, Tensor] = {}  # parents' x gathered per sparse block, reused for line 20
    for blk in into.get(g, ()):
        if base is not None and blk.src == 0:
            if not blk.dense and gathered is not None:
                xg[blk.param] = gathered[blk.param]
            continue
        w = net.weights[blk.param]
        if blk.dense:
            f = torch.addmm(f, st.xs[blk.src], w.t())
        else:
            xg[blk.param] = xj = st.xs[blk.src][:, blk.src_idx]
            f = f.index_add(1, blk.dst_idx, xj * w)
    act = net.acts[g]
    s = act.fn(f)
    ds = act.derivative(f, s)
    G = x - s                                                   # line 16 (Eq. 5)
    d = lam + dyn.rho * G if dyn.rho else lam                   # Eq. 4, lambda~ = lambda + rho G
    if c is not None:
        d = d - c
    if dv is not None:
        d = d + dv
    if alpha is not None and dyn.l1_mode == "subgradient":
        d = d + alpha * torch.sign(x)
    x_new = x - dyn.mu_x * d                                    # line 17
    if alpha is not None and dyn.l1_mode == "prox":
        x_new = soft_threshold(x_new, dyn.mu_x * alpha)
    lam_new = lam + dyn.mu_lambda * G                           # line 18
    lt = lam_new + dyn.rho * (x_new - s) if dyn.rho else lam_new
    m = lt * ds
    st.xs[g], st.lams[g], st.fs[g], st.ms[g] = x_new, lam_new, f, m
    post_messages(net, st, g, into.get(g, ()), mailbox, grad_scale, xg)
    return G


def post_messages(net: Network, st: LocalState, g: int, into_g: Sequence, mailbox: list[Tensor | None] | None,
                  grad_scale: float | None = None, xg: dict[int, Tensor] | None = None) -> None:
    """After group g's visit: its message m_g into its parents' mailboxes (children-first
    sweeps) and, with ``grad_scale``, line 20's gradient of the arcs into g -- one gather of m
    per sparse block serves both.  ``xg``: the parents' x already gathered by the visit."""
    if grad_scale is None and mailbox is None:
        return
    m = st.ms[g]
    xg = xg or {}
    for blk in into_g:
        w = net.weights[blk.param]
        post = mailbox is not None and blk.src != 0
        if blk.dense:
            if grad_scale is not None:
                w.grad.addmm_(m.t(), st.xs[blk.src], alpha=-grad_scale)
            if post:
                mb = mailbox[blk.src]
                mailbox[blk.src] = m @ w if mb is None else torch.addmm(mb, m, w)
            continue
        mg = m[:, blk.dst_idx]
        if grad_scale is not None:
            xj = xg.get(blk.param)
            xj = st.xs[blk.src][:, blk.src_idx] if xj is None else xj
            w.grad.add_((mg * xj).sum(0), alpha=-grad_scale)
        if post:
            mb = mailbox[blk.src]
            mb = m.new_zeros(m.shape[0], len(net.groups[blk.src].neurons)) if mb is None else mb
            mailbox[blk.src] = mb.index_add(1, blk.src_idx, mg * w)
    if grad_scale is not None:
        gb = m.sum(0)
        mask = net.bias_mask(g)
        net.biases[g - 1].grad.add_(gb if mask is None else gb * mask, alpha=-grad_scale)


def zero_grads(net: Network) -> None:
    for p in net.parameters():
        p.grad = torch.zeros_like(p)


def sweep(net: Network, st: LocalState, y: Tensor, dyn: Dynamics,
          alpha: Sequence[Tensor | float | None] | None = None,
          base: Sequence[Tensor | None] | None = None, gathered: dict[int, Tensor] | None = None,
          blocks: Blocks | None = None, reverse: bool = False,
          grad_scale: float | None = None) -> list[Tensor | None]:
    """One Gauss-Seidel sweep over the groups, weights fixed: topological order (parents
    first) or, ``reverse``, children first.  With ``grad_scale`` each visit adds its weight
    gradient times ``grad_scale`` to ``.grad`` (zero it first: :func:`zero_grads`)."""
    blocks = blocks if blocks is not None else _by_group(net)
    dv = net.scatter_outputs(loss_grad(dyn.loss, net.gather_outputs(st.xs), y), st.xs)
    n = len(net.groups)
    G: list[Tensor | None] = [None] * n
    mailbox: list[Tensor | None] | None = [None] * n if reverse else None
    for g in (range(n - 1, 0, -1) if reverse else range(1, n)):
        a = alpha[g] if alpha is not None else None
        G[g] = visit_group(net, st, g, dv[g], a, dyn, None if base is None else base[g], gathered, blocks,
                           mailbox, grad_scale)
    return G


def sweep_per_example(net: Network, st: LocalState, y: Tensor, dyn: Dynamics,
                      alpha: Sequence[Tensor | float | None] | None,
                      weight_step: Callable[[], None] | None, reverse: bool = False) -> list[Tensor | None]:
    """One sweep with on-line weights: example by example, ``weight_step`` after each one.

    Before ``weight_step`` the parameters' ``.grad`` hold that example's dL/dw (Eq. 3, not
    divided: a batch of one).  ``weight_step=None`` leaves the weights alone.
    """
    blocks = _by_group(net)
    G: list[Tensor | None] = [None] + [torch.empty_like(t) for t in st.xs[1:]]
    for k in range(st.xs[0].shape[0]):
        row = st.rows(k)
        a_k = None if alpha is None else [
            a[k:k + 1] if isinstance(a, Tensor) and a.ndim == 2 else a for a in alpha]
        if weight_step is not None:
            zero_grads(net)
        Gk = sweep(net, row, y[k:k + 1], dyn, a_k, None, None, blocks, reverse,
                   1.0 if weight_step is not None else None)
        if weight_step is not None:
            weight_step()
        st.put_rows(k, row)
        for g in range(1, len(G)):
            G[g][k] = Gk[g][0]
    return G


def sgd(net: Network, mu_w: float) -> Callable[[], None]:
    """w <- w - mu_w dL/dw on every parameter: the plain update Algorithm 2 prints."""
    def step() -> None:
        with torch.no_grad():
            for p in net.parameters():
                p.sub_(mu_w * p.grad)
    return step


def run_sweeps(net: Network, st: LocalState, y: Tensor, dyn: Dynamics, sweeps: int = 1,
               schedule: str = "sweep", weight_step: Callable[[], None] | None = None,
               alpha: Sequence[Tensor | float | None] | None = None,
               learn: bool = True, reverse: bool = False) -> list[Tensor | None]:
    """``sweeps`` sweeps of Algorithm 2; the weights move after every sweep ('sweep'
    schedule, gradient / batch) or every example ('example'), when ``learn``."""
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown weight schedule {schedule!r}; choose one of {SCHEDULES}")
    check_levels(net)
    G: list[Tensor | None] = []
    step = weight_step if learn else None
    with torch.no_grad():
        for _ in range(sweeps):
            if schedule == "example":
                G = sweep_per_example(net, st, y, dyn, alpha, step, reverse)
                continue
            base, gathered = input_part(net, st.xs[0])
            if step is not None:
                zero_grads(net)
            G = sweep(net, st, y, dyn, alpha, base, gathered, None, reverse,
                      1.0 / st.xs[0].shape[0] if step is not None else None)
            if step is not None:
                step()
    return G


# ---------------------------------------------------------------- the training method
def _initial(trainer: Trainer, idx: Tensor | None, x_in: Tensor, base: list) -> tuple[list, list]:
    """x stored or predicted by a forward pass, lambda stored or 0 (as the trainer's mdmm does)."""
    from .dynamics import forward_state, zero_state

    cfg, st, net = trainer.cfg, trainer.state, trainer.net
    if cfg.state == "stored":
        xs = [x_in] + st.get_x(idx)[1:]
        fresh = ~st.visited if idx is None else ~st.visited[idx]
        if bool(fresh.any()):
            init = forward_state(net, x_in, base) if cfg.x_init == "forward" else zero_state(net, x_in)
            xs = [x_in] + [torch.where(fresh[:, None], i, s) for i, s in zip(init[1:], xs[1:])]
    else:
        xs = forward_state(net, x_in, base)
    lams = st.get_lambda(idx) if cfg.lambda_init == "stored" else [None] + [
        torch.zeros_like(t) for t in xs[1:]]
    return xs, lams


def local_method(trainer: Trainer) -> Callable[[Tensor | None], None]:
    """``--method local``: a batch's x and lambda are initialised as for mdmm (``--state``,
    ``--lambda-init``, ``--x-init``; the stored f is the pre-activation of that x), then
    ``--relax-steps`` sweeps of Algorithm 2 run, children first (``cfg.extra['order'] =
    'forward'`` for parents first).

    ``--schedule sweep``: the sweeps relax x and lambda with the weights fixed; the last one
    also sums the weight gradient over the batch (divided by its size), at each neuron's
    visit, and one optimizer step follows -- mdmm's step with Gauss-Seidel sweeps in place
    of Jacobi steps.  ``--schedule example``: every sweep steps the optimizer after every
    example, on that example's gradient (on-line, any ``torch.optim`` optimizer; with plain
    SGD it is Algorithm 2 with the weights of an example applied after its pass).  The
    reported constraint violation is the mean G^2 the last sweep read (line 16).
    """
    net, cfg = trainer.net, trainer.cfg
    check_levels(net)
    schedule = getattr(cfg, "schedule", "sweep")
    if schedule not in SCHEDULES:
        raise ConfigError(f"--schedule must be one of {SCHEDULES}, got {schedule!r}")
    blocks = _by_group(net)
    order = cfg.extra.get("order", "backward")
    if order not in ORDERS:
        raise ConfigError(f"the local engine's order must be one of {ORDERS}, got {order!r}")
    reverse = order == "backward"
    # the trainer resolves --relax-steps 0 (auto: the depth); older trainers kept it in cfg
    steps = getattr(trainer, "relax_steps", cfg.relax_steps) or max(1, net.depth)

    def per_example_step() -> None:
        trainer.weight_step()

    def step(idx: Tensor | None) -> None:
        x_in, y = trainer.batch(idx)
        x_in = net.split_inputs(x_in)
        dyn, st = trainer.dyn, trainer.state
        alpha = trainer.alpha.for_batch(len(net.groups), idx) if trainer.alpha else None
        with torch.no_grad():
            base, gathered = input_part(net, x_in)
            xs, lams = _initial(trainer, idx, x_in, base)
            ls = init_state(net, xs, lams, dyn.rho, base)
            for k in range(steps):
                prev = [t.clone() for t in ls.xs] if schedule == "example" else list(ls.xs)
                if schedule == "example":
                    G = sweep_per_example(net, ls, y, dyn, alpha, per_example_step, reverse)
                else:
                    last = k == steps - 1
                    if last:
                        zero_grads(net)
                    G = sweep(net, ls, y, dyn, alpha, base, gathered, blocks, reverse,
                              1.0 / x_in.shape[0] if last else None)
            trainer._accumulate(G, ls.xs, y, lams=ls.lams, prev=prev)
            st.put(idx, ls.xs if cfg.state == "stored" else None,
                   ls.lams if cfg.lambda_init == "stored" else None)
        if schedule == "sweep":
            trainer.weight_step()

    return step


register_method("local", local_method)
