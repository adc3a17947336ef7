"""The torch.optim.Optimizer behind every mlorc.torch optimizer.

Bookkeeping is torch's (param groups, LR schedulers, hooks, state_dict); the
step is libmlorc's: one batched native call per param group, parameters and
state updated in place. Each group has its own native handle, configured
from the group's values before every call, so changes to a group (betas,
weight decay...) and LR schedules take effect at the next step, except the
settings baked into the states (rank, oversampling, stats_stride, d0): a
change to those is refused at the next step (fixed_settings.py).
"""
import math
import weakref

import torch
from torch.autograd.graph import increment_version

from .. import _native
from .._policy import storage_request
from . import checkpoint
from .compiling import eager
from .fixed_settings import check_unchanged, fixed_settings
from .names import group_names
from .tensor_ids import tensor_id
from .torch_flags import check_flags
from . import sharding
from .tensors import check_param, dtype_of, grad_array, layout_of, param_array

STATE_KEY = checkpoint.STATE_KEY
GROUP_STATE_KEY = checkpoint.GROUP_STATE_KEY
_MAX_THREADS = 256
# What copy.deepcopy / pickle / torch.save carry besides torch's own state
# (defaults, state, param_groups): everything but the native handles, which
# hold no state and are re-created from the groups' settings.
_COPIED = ("_compress", "_group_index", "_positions", "_tensor_ids", "_storage", "_names", "_fixed")
# Rules with a sharded step (FSDP2 parameters; mlorc_step_sharded).
_SHARDED_RULES = ("adamw", "lion", "adopt", "came", "mofasgd", "prodigy", "dadapt_lion")


class MlorcOptimizer(torch.optim.Optimizer):
    """Common machinery; subclasses set `_rule` and `_settings(group)`."""

    _rule = None
    # D-adaptation rules estimate one step size per param group: each group
    # then carries its native group state (a uint8 tensor under
    # GROUP_STATE_KEY, saved with the optimizer) and its current estimate "d".
    _adapts_step_size = False

    def __init__(self, params, defaults, compress=None):
        lr = defaults["lr"]
        # Half-precision parameters (bf16, f16): every rule takes these two.
        defaults.setdefault("master_weights", False)
        defaults.setdefault("stochastic_rounding", True)
        if not (isinstance(lr, (int, float, torch.Tensor)) and math.isfinite(float(lr)) and float(lr) >= 0):
            raise ValueError(f"Invalid learning rate: {lr}")
        self._compress = compress
        self._handles = []        # group index -> native handle
        self._fixed = []          # group index -> its fixed settings (fixed_settings.py)
        self._group_index = {}    # param -> group index
        self._positions = {}      # param -> its index in the optimizer's global parameter order
        self._tensor_ids = {}     # param -> tensor id, fixed when its group is added (tensor_ids.py)
        self._storage = {}        # param -> requested MLORC_STORAGE_*
        self._names = {}          # param -> name, when known (names.py)
        self._checked = {}        # param -> weakref to the state tensor last created or checked here
        self._shards = {}         # FSDP2 param -> (global rows, cols, first row of this rank's shard)
        super().__init__(params, defaults)
        self._check_compress_names()

    # ------------------------------------------------------------- groups

    def _settings(self, group):
        """Named libmlorc hyperparameters of a group (see subclasses)."""
        raise NotImplementedError

    def _configure(self, handle, group):
        for name, value in self._settings(group).items():
            _native.set_hyper(handle, name, value)
        if _native.supports_half(self._rule):
            _native.set_hyper(handle, "master_weights", int(bool(group["master_weights"])))
            _native.set_hyper(handle, "stochastic_rounding", int(bool(group["stochastic_rounding"])))
        state_dtype = group.get("state_dtype", "f32")
        if state_dtype not in ("f32", "bf16"):
            raise ValueError(f"state_dtype must be 'f32' or 'bf16', got {state_dtype!r}")
        if state_dtype != "f32" or _native.supports_state_dtype(self._rule):
            _native.set_hyper(handle, "state_dtype", _native.DTYPES[state_dtype])

    @staticmethod
    def _threads(group):
        threads = group.get("threads")
        return min(_MAX_THREADS, max(1, torch.get_num_threads())) if threads is None else threads

    @staticmethod
    def _options(group):
        """The update options every rule shares (Grams, cautious, OrthoGrad, clipping)."""
        return dict(grams=int(bool(group["grams"])), cautious=int(bool(group["cautious"])),
                    orthograd=int(bool(group["orthograd"])), clip_norm=float(group["clip_norm"]))

    def add_param_group(self, param_group):
        """As torch's, plus an optional "compress" entry (see mlorc._policy),
        which is resolved here and not kept in the group, so that groups stay
        serialisable."""
        param_group = dict(param_group)
        compress = param_group.pop("compress", self._compress)
        gi = len(self.param_groups)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._add_group(gi, group, compress)
        except BaseException:
            self.param_groups.pop()  # all or nothing: the group was not added
            raise

    def _add_group(self, gi, group, compress):
        params = group["params"]
        if len(set(params)) != len(params):
            raise ValueError(f"parameter group {gi} lists a parameter twice (it would be stepped twice)")
        check_flags(gi, group)
        handle = self._new_handle(gi, group)
        first = len(self._positions)  # position of params[0] in the optimizer's global order
        names = group_names(gi, group, first)
        ids = self._new_tensor_ids(names, first)
        shards = self._group_shards(gi, params, names, first, handle)
        storage = {}
        for j, p in enumerate(params):
            label = f"parameter {names[j]!r}" if names[j] is not None else f"parameter {first + j}"
            check_param(p, label)
            if p.dtype != torch.float32 and not _native.supports_half(self._rule):
                raise TypeError(f"{label} has dtype {p.dtype}, but {type(self).__name__} steps float32 "
                                "parameters only: convert the model with model.float()")
            request = storage_request(compress, names[j] if names[j] is not None else first + j, p, group["rank"])
            if p.numel() > 0:
                try:
                    self._state_size(handle, p, request, shards.get(p))
                except _native.MlorcError as e:
                    raise ValueError(f"{label} (shape {tuple(p.shape)}, {p.dtype}) cannot be stored as asked: "
                                     f"{e.message}") from e
            storage[p] = request
        if self._adapts_step_size and GROUP_STATE_KEY not in group:
            group_state = torch.empty(_native.GROUP_STATE_BYTES, dtype=torch.uint8)
            handle.group_state_init(group_state.numpy())
            group[GROUP_STATE_KEY] = group_state
            group["d"] = _native.inspect_group_state(group_state)["d"]
        self._handles.append(handle)
        self._fixed.append(fixed_settings(group))
        for j, p in enumerate(params):
            self._group_index[p] = gi
            self._positions[p] = first + j
            self._tensor_ids[p] = ids[j]
            self._storage[p] = storage[p]
            if names[j] is not None:
                self._names[p] = names[j]
        self._shards.update(shards)

    def _group_shards(self, gi, params, names, first, handle):
        """{param: (global rows, cols, first row here)} for a group of FSDP2
        parameters ({} for plain ones); a group is one or the other. Set up
        the handle's reducer. Collective: every rank builds the group alike."""
        sharded = [sharding.fsdp_shard(p) is not None for p in params]
        if not any(sharded):
            return {}
        if not all(sharded):
            j = sharded.index(False)
            label = f"parameter {names[j]!r}" if names[j] is not None else f"parameter {first + j}"
            raise TypeError(f"parameter group {gi} mixes FSDP2 parameters with plain ones ({label}): put the "
                            "parameters of fully_shard modules in groups of their own")
        if self._rule not in _SHARDED_RULES:
            raise TypeError(f"{type(self).__name__} has no sharded step for FSDP2 parameters yet (AdamW, Lion, "
                            "Adopt, CAME, MoFaSGD, Prodigy and DAdaptLion have): use DDP, or ZeroRedundancyOptimizer "
                            "with mlorc.torch.named(model)")
        groups = {sharding.fsdp_shard(p)[1] for p in params}
        if len(groups) != 1:
            raise TypeError(f"parameter group {gi} holds FSDP2 parameters of several device meshes: one group per mesh")
        (process_group,) = groups
        offsets = sharding.row_offsets(params, process_group)
        handle.set_reducer(sharding.reducer(process_group))
        return {p: sharding.global_layout(p) + (offset,) for p, offset in zip(params, offsets)}

    def _layout(self, p):
        """(rows, cols) of what this rank steps of p: its shard's, for FSDP2."""
        shard = self._shards.get(p)
        if shard is None:
            return layout_of(p)
        return sharding.local_layout(sharding.fsdp_shard(p)[0], shard[1])

    def _state_size(self, handle, p, request, shard=None):
        shard = self._shards.get(p) if shard is None else shard
        if shard is None:
            return handle.state_size(*layout_of(p), request, dtype_of(p))
        rows, cols = sharding.local_layout(sharding.fsdp_shard(p)[0], shard[1])
        return handle.state_size_sharded(rows, cols, request, dtype_of(p), shard[0], shard[2])

    def _new_tensor_ids(self, names, first):
        """The tensor ids of a new group's parameters; ValueError if one is
        already taken (two tensors with one id would draw the same sketches).
        Name ids and position ids never meet (tensor_ids.py)."""
        taken = {tid: self._names.get(p) for p, tid in self._tensor_ids.items()}
        ids = []
        for j, name in enumerate(names):
            tid = tensor_id(first + j, name)
            if tid in taken:
                other = taken[tid]
                if other == name:
                    raise ValueError(f"two parameters are named {name!r}: names identify parameters (their "
                                     "tensor ids and checkpoints); use the fully qualified names of one "
                                     "model (model.named_parameters() or mlorc.torch.named(model))")
                raise ValueError(f"parameters {other!r} and {name!r} have the same tensor id {tid} (a "
                                 "collision of their names' hashes): rename one of them")
            taken[tid] = name
            ids.append(tid)
        return ids

    def _check_compress_names(self):
        """A constructor-level set of names must name real parameters (a typo
        would silently leave a matrix dense)."""
        if isinstance(self._compress, (set, frozenset, list, tuple)):
            unknown = set(self._compress) - set(self._names.values())
            if unknown:
                raise ValueError(f"compress= names parameters that are not optimized: {sorted(unknown)}")

    def _label(self, p):
        name = self._names.get(p)
        return f"parameter {name!r}" if name is not None else f"parameter {self._positions[p]}"

    # ----------------------------------------------------- copy and pickle

    def __getstate__(self):
        """As torch's, plus the bookkeeping above. A callable compress= policy
        must itself be picklable to pickle the optimizer."""
        if self._shards:
            raise TypeError("an optimizer of FSDP2 parameters cannot be copied or pickled (its reducer holds a "
                            "process group): save each rank's state_dict() instead")
        state = super().__getstate__()
        state["mlorc"] = {key: getattr(self, key) for key in _COPIED}
        return state

    def __setstate__(self, state):
        # torch's load_state_dict calls this too, with state and param_groups
        # only: the handles are kept then.
        state = dict(state)
        bookkeeping = state.pop("mlorc", None)
        super().__setstate__(state)
        if bookkeeping is not None:
            self.__dict__.update(bookkeeping)
            self._shards = {}
            self._handles = [self._new_handle(gi, group) for gi, group in enumerate(self.param_groups)]
            self._checked = {}
            self._mark_all_checked()  # this optimizer's own states, copied

    def _mark_all_checked(self):
        for p, entry in self.state.items():
            tensor = entry.get(STATE_KEY) if isinstance(entry, dict) else None
            if isinstance(tensor, torch.Tensor):
                self._mark_checked(p, tensor)

    def _new_handle(self, gi, group):
        """A native handle configured from `group` (ValueError if it cannot be)."""
        handle = _native.Handle(_native.rule_code(self._rule))
        try:
            self._configure(handle, group)
        except _native.MlorcError as e:
            raise ValueError(f"parameter group {gi}: {e.message}") from e
        return handle

    # --------------------------------------------------------------- state

    def _state_array(self, p, handle):
        """p's state bytes as a numpy array, initialised on first use."""
        state = self.state[p]
        tensor = state.get(STATE_KEY)
        if tensor is None:
            rows, cols = self._layout(p)
            request, dtype = self._storage[p], dtype_of(p)
            tensor = torch.empty(self._state_size(handle, p, request), dtype=torch.uint8)
            shard = self._shards.get(p)
            # The values of fp32 master weights (ignored without them).
            param = param_array(p) if dtype != _native.DTYPES["f32"] else None
            if shard is not None:
                handle.state_init_sharded(tensor.numpy(), rows, cols, self._tensor_ids[p], request, dtype,
                                          shard[0], shard[2], param)
            else:
                handle.state_init(tensor.numpy(), rows, cols, self._tensor_ids[p], request, dtype, param)
            state[STATE_KEY] = tensor
            self._mark_checked(p, tensor)
        elif not self._was_checked(p, tensor):
            # Put in place behind load_state_dict's back: ZeroRedundancyOptimizer.load_state_dict
            # writes each rank's states straight into its local optimizer.
            tensor = checkpoint.adopted_state(self, p, tensor)
            state[STATE_KEY] = tensor
            self._mark_checked(p, tensor)
        return tensor.numpy()

    def _mark_checked(self, p, tensor):
        self._checked[p] = weakref.ref(tensor)

    def _was_checked(self, p, tensor):
        ref = self._checked.get(p)
        return ref is not None and ref() is tensor

    def state_bytes(self):
        """Bytes of optimizer state for all parameters (initialised or not yet)."""
        total = 0
        for gi, group in enumerate(self.param_groups):
            check_unchanged(gi, group, self._fixed[gi])
            handle = self._handles[gi]
            self._configure(handle, group)
            for p in group["params"]:
                tensor = self.state[p].get(STATE_KEY) if p in self.state else None
                if tensor is not None:
                    total += tensor.numel()
                elif p.numel() > 0:
                    total += self._state_size(handle, p, self._storage[p])
        return total

    def dense_adamw_state_bytes(self):
        """Bytes dense AdamW (torch.optim.AdamW) keeps for the same parameters:
        two moments of the parameter's dtype each (its per-parameter step
        counters not counted)."""
        return sum(2 * p.element_size() * p.numel() for group in self.param_groups for p in group["params"])

    def load_state_dict(self, state_dict):
        """As torch's, after checking every state against this optimizer
        (rule, shape, storage, rank, tensor id, and the parameter names when
        both sides were built from named parameters): on any mismatch a
        ValueError is raised and nothing changes. A state keeps the tensor id
        it was created with (checkpoint._validate_tensor_id). States put into
        `state` by other means get the same checks, and are copied, at the
        next step.

        Checkpoints move between world sizes: a state saved for other rows of
        an FSDP2 parameter (another world size, or the whole matrix of an
        unsharded run) is resharded here when the checkpoint holds the rows
        this rank needs (resharding.py: what torch.distributed.checkpoint
        loads, a full state dict, an unsharded optimizer's state_dict). With
        FSDP2 parameters every rank must call it (as torch's
        set_optimizer_state_dict does): a refusal on one rank is a refusal on
        all, and nothing is loaded anywhere."""
        if self._shards:  # every rank loads, or none: a refusal on one rank is a refusal on all
            try:
                state_dict = checkpoint.resharded(self, state_dict)
                checkpoint.validate(self, state_dict)
            except Exception:
                sharding.all_agree(False, sharding.process_groups(self._shards))
                raise
            if not sharding.all_agree(True, sharding.process_groups(self._shards)):
                raise ValueError("load_state_dict was refused on another rank (its error names the state); "
                                 "nothing was loaded on any rank")
        else:
            state_dict = checkpoint.resharded(self, state_dict)
            checkpoint.validate(self, state_dict)
        super().load_state_dict(checkpoint.boxed(state_dict))
        checkpoint.unbox(self)
        self._mark_all_checked()
        for group in self.param_groups:  # private copies here too
            if GROUP_STATE_KEY in group:
                group[GROUP_STATE_KEY] = group[GROUP_STATE_KEY].clone()
        self._fixed = [fixed_settings(group) for group in self.param_groups]

    def state_dict(self):
        """As torch's; refused (ValueError) if a fixed setting was changed
        since the optimizer was built (the checkpoint would misdescribe the
        states). The state of an FSDP2 parameter is given as its rows (a
        uint8 DTensor sharded like the parameter) and its replicated part, so
        that torch.distributed.checkpoint can reshard it (resharding.py)."""
        for gi, group in enumerate(self.param_groups):
            check_unchanged(gi, group, self._fixed[gi])
        state_dict = super().state_dict()
        return checkpoint.with_rows(self, state_dict) if self._shards else state_dict

    # ---------------------------------------------------------------- step

    def _prepare(self, gi, params):
        """Checks `params` of group `gi` (those with a gradient) and builds
        their native batch; raises before anything is stepped."""
        group, handle = self.param_groups[gi], self._handles[gi]
        check_unchanged(gi, group, self._fixed[gi])
        check_flags(gi, group)
        self._configure(handle, group)
        maximize = bool(group.get("maximize", False))
        batch, stepped = [], []
        for p in params:
            if p.grad is None or p.numel() == 0:
                continue
            label = self._label(p)
            check_param(p, label)
            grad = grad_array(p, label, negate=maximize)
            item = (param_array(p), grad, self._state_array(p, handle)) + self._layout(p) + (dtype_of(p),)
            shard = self._shards.get(p)
            batch.append(item if shard is None else item + (shard[0], shard[2]))
            stepped.append(p)
        return handle, float(group["lr"]), batch, stepped, group

    @staticmethod
    def _run(handle, lr, batch, stepped, group):
        """One native call: all or nothing."""
        if batch:
            group_state = group.get(GROUP_STATE_KEY)
            if len(batch[0]) == 8:  # FSDP2 shards: every rank steps them together
                if group_state is None:
                    handle.step_sharded(batch, lr)
                else:  # every rank holds the group state and advances it alike
                    handle.step_sharded(batch, lr, group_state.numpy())
                    group["d"] = _native.inspect_group_state(group_state)["d"]
            elif group_state is None:
                handle.step(batch, lr)
            else:
                handle.step(batch, lr, group_state.numpy())
                group["d"] = _native.inspect_group_state(group_state)["d"]
            # The parameters changed behind autograd's back: let it know, as
            # an in-place torch op would.
            increment_version(stepped)

    @eager
    @torch.no_grad()
    def step(self, closure=None):
        """One step of every param group (one native call each). Parameters
        whose .grad is None are skipped. Every group is checked before any is
        stepped; each group's native call is all or nothing."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        prepared = [self._prepare(gi, group["params"]) for gi, group in enumerate(self.param_groups)]
        for work in prepared:
            self._run(*work)
        return loss

    @eager
    @torch.no_grad()
    def step_param(self, p):
        """Steps one parameter now, e.g. from p.register_post_accumulate_grad_hook,
        so its gradient can be freed during backward. Equals what step() does
        to `p`."""
        gi = self._group_index.get(p)
        if gi is None:
            raise ValueError("step_param: this tensor is not a parameter of this optimizer")
        if p in self._shards:
            raise RuntimeError("step_param: FSDP2 parameters are stepped together by every rank; call step()")
        if self._adapts_step_size:
            raise RuntimeError(f"step_param: {type(self).__name__} estimates its step size over the whole "
                               "parameter group in one step; call step() instead")
        self._run(*self._prepare(gi, [p]))
        self._opt_called = True  # LR schedulers check that the optimizer stepped

    def register_step_hooks(self, set_grad_to_none=True):
        """Steps every parameter as soon as its gradient is accumulated
        (step_param from a post-accumulate-grad hook), then frees the gradient.
        Returns the hook handles (call .remove() on each to undo)."""

        if self._adapts_step_size:
            raise RuntimeError(f"register_step_hooks: {type(self).__name__} estimates its step size over "
                               "the whole parameter group in one step; call step() instead")
        if self._shards:
            raise RuntimeError("register_step_hooks: FSDP2 parameters are stepped together by every rank in one "
                               "step(); call step() instead")

        def hook(p):
            self.step_param(p)
            if set_grad_to_none:
                p.grad = None

        return [p.register_post_accumulate_grad_hook(hook)
                for group in self.param_groups for p in group["params"]]
