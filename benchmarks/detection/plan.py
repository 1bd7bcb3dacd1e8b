"""A run's plan, drawn from its seed: writer, model family, optimizer, LR, schedule, logging
cadence, and the pathology built into it (scenario, onset, strength) or none.

Every scenario is a real mechanism in the training (a corrupted batch, a one-step LR jump, heavy
momentum, a cyclic LR with too high a top, an LR far too small or decayed to ~0, dead ReLUs, a
tiny noisy training set, a NaN in a batch, an LR far too high); the numbers in the log are what the
training produced.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field

from detection.tasks import CLASSES, FAMILIES, FLOAT_INPUTS, ORDINARY_LR, RELU_FAMILIES

# scenario -> (category it is labelled with, categories that are acceptable consequences)
SCENARIOS = {
    "healthy": (None, ()),
    "healthy_noisy": (None, ()),
    "healthy_slow": (None, ()),
    "spike_batch": ("spike", ()),
    "spike_lr": ("spike", ()),
    "osc_momentum": ("oscillation", ()),
    "osc_cyclic": ("oscillation", ()),
    "stall_tiny_lr": ("stall", ()),
    "stall_early_decay": ("stall", ()),
    "stall_dead_relu": ("stall", ("spike", "explosion")),
    "stall_blowup_mean": ("stall", ()),  # labelled spike as well: the 100x excursion that returns
    "stall_unigram": ("stall", ("spike", "oscillation")),
    "div_overfit": ("train_val_divergence", ()),
    "div_few_evals": ("train_val_divergence", ()),
    "nan_high_lr": ("nonfinite", ("explosion", "spike")),
    "nan_data": ("nonfinite", ()),
    "explode_clipped": ("explosion", ("stall", "spike", "oscillation")),  # a clipped high-LR loss bounces
}
# How often each scenario is drawn: ~40 % healthy controls, the rest spread over the categories.
WEIGHTS = {"healthy": 22, "healthy_noisy": 12, "healthy_slow": 6, "spike_batch": 6, "spike_lr": 4,
           "osc_momentum": 4, "osc_cyclic": 6, "stall_tiny_lr": 3, "stall_early_decay": 2, "stall_dead_relu": 2,
           "stall_blowup_mean": 1, "stall_unigram": 2, "div_overfit": 6, "div_few_evals": 4, "nan_high_lr": 5,
           "nan_data": 5, "explode_clipped": 10}
_BAG = [name for name in sorted(WEIGHTS) for _ in range(WEIGHTS[name])]
random.Random(0).shuffle(_BAG)

# Which scenarios and families each writer trains (the frameworks' own loops limit a few).
WRITERS = {
    "torch": {"weight": 45, "families": FAMILIES, "scenarios": set(SCENARIOS)},
    "lightning": {"weight": 20, "families": FAMILIES, "scenarios": set(SCENARIOS)},
    "keras": {"weight": 17, "families": ("mlp", "cnn", "regression", "logistic"),  # its LSTM is slow on CPU
              "scenarios": {"healthy", "healthy_noisy", "spike_batch", "osc_cyclic", "stall_tiny_lr",
                            "stall_dead_relu", "div_overfit", "div_few_evals", "nan_high_lr", "explode_clipped"}},
    "hf": {"weight": 18, "families": ("transformer", "regression"),
           "scenarios": {"healthy", "healthy_noisy", "healthy_slow", "spike_lr", "stall_tiny_lr", "stall_unigram",
                         "div_few_evals", "nan_data", "nan_high_lr", "explode_clipped", "osc_cyclic"}},
}
SCHEDULES = ("constant", "step", "cosine", "warmup_cosine", "onecycle", "cyclic", "sgdr", "plateau", "linear")


@dataclass
class Plan:
    name: str
    seed: int
    split: str
    writer: str
    scenario: str
    family: str
    optimizer: str
    lr: float
    schedule: str
    steps: int
    batch: int
    n_train: int
    cadence: str  # "step", "every", "epoch"
    log_every: int = 1  # for "every": train scalars are the mean of the last log_every steps
    eval_every: int = 0  # steps between evaluations (0: none)
    momentum: float = 0.9
    clip: float | None = None
    label_noise: float = 0.0
    big: bool = False  # over-parameterised model on a tiny, hard data set (overfitting)
    sched_params: dict = field(default_factory=dict)
    events: dict = field(default_factory=dict)  # step -> [kind, value]
    per_epoch: int = 0  # batches per epoch when not n_train // batch (Keras: a small set seen several times an epoch)

    @property
    def category(self):
        return SCENARIOS[self.scenario][0]

    @property
    def acceptable(self):
        return list(SCENARIOS[self.scenario][1])

    @property
    def steps_per_epoch(self):
        return self.per_epoch or self.n_train // self.batch

    def to_dict(self):
        return {**asdict(self), "category": self.category, "acceptable": self.acceptable}


def _pick(rng, weights: dict):
    keys = sorted(weights)
    return rng.choices(keys, [weights[k] for k in keys])[0]


def _loguniform(rng, low, high):
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def draw(seed: int, split: str, writer: str | None = None) -> Plan:
    """The plan of run `seed`: deterministic in the seed alone (`writer` forces one: tests)."""
    rng = random.Random(seed)
    scenario = _BAG[seed % len(_BAG)]  # consecutive seeds cover the scenarios in WEIGHTS' proportions
    writer = writer or _pick(rng, {name: spec["weight"] for name, spec in WRITERS.items() if scenario in spec["scenarios"]})
    families = [f for f in WRITERS[writer]["families"] if f in _families_for(scenario)]
    family = rng.choice(families)
    optimizer = rng.choice(("sgd", "momentum", "adam", "adamw"))
    plan = Plan(name="", seed=seed, split=split, writer=writer, scenario=scenario, family=family, optimizer=optimizer,
                lr=ORDINARY_LR[optimizer][family] * _loguniform(rng, 0.5, 2.0), schedule=rng.choice(SCHEDULES),
                steps=rng.randrange(200, 401, 10), batch=rng.choice((16, 32, 64)), n_train=0,
                cadence=rng.choice(("step", "step", "every", "epoch")), clip=rng.choice((None, 1.0)))
    plan.log_every = rng.choice((5, 10, 20))
    if writer == "hf" and family == "transformer" and optimizer in ("sgd", "momentum"):
        # GPT-2's small init learns next to nothing in a few hundred SGD steps; HF users fine-tune with AdamW
        plan.optimizer, plan.lr = "adamw", ORDINARY_LR["adamw"][family] * _loguniform(rng, 0.5, 2.0)
    _shape(plan, rng)
    if writer == "keras":  # CSVLogger writes one row per epoch: few batches per epoch, many epochs
        plan.cadence = "epoch"
        if scenario == "div_few_evals":
            plan.per_epoch = plan.eval_every
        # at most ~30 epochs: each costs Keras a validation pass and its callbacks
        plan.n_train = plan.n_train or plan.batch * max(rng.choice((4, 6, 10)), plan.steps // 30)
        if scenario == "osc_cyclic":
            plan.sched_params["period"] = plan.steps_per_epoch * rng.choice((4, 6, 8))
    if writer == "hf" and scenario == "nan_data":
        plan.events = {}  # the NaN is one record of the data set; the Trainer's sampler picks the step
    plan.n_train = plan.n_train or plan.batch * rng.choice((20, 30, 40))
    if plan.cadence == "epoch":
        plan.steps = plan.steps_per_epoch * max(3 if plan.per_epoch else 12, round(plan.steps / plan.steps_per_epoch))
    if plan.schedule in ("cyclic", "sgdr") and "period" not in plan.sched_params:
        plan.sched_params["period"] = rng.choice((40, 60, 80, 100))
    plan.eval_every = plan.eval_every or (plan.steps_per_epoch if plan.cadence == "epoch"
                                          else plan.steps // rng.randrange(8, 21))
    plan.name = f"{split}_{seed:05d}_{writer}_{family}_{scenario}"
    return plan


def _families_for(scenario: str):
    return {"spike_batch": FLOAT_INPUTS - {"linreg"},
            "osc_momentum": {"linreg", "regression"},
            "stall_dead_relu": RELU_FAMILIES & set(CLASSES),
            "stall_blowup_mean": {"regression"},
            "stall_unigram": {"transformer"},
            "div_overfit": {"mlp", "cnn"},
            "div_few_evals": {"mlp", "cnn", "transformer"},
            "nan_high_lr": {"regression", "lstm", "linreg", "mlp"},
            "nan_data": FLOAT_INPUTS,
            "explode_clipped": {"regression", "lstm", "mlp", "transformer"},
            "healthy_slow": {"transformer", "regression", "lstm"}}.get(scenario, set(FAMILIES))


def _shape(plan: Plan, rng: random.Random) -> None:
    """Set what the scenario needs on top of the ordinary draw."""
    s, steps = plan.scenario, plan.steps
    if s == "healthy_noisy":
        plan.batch = rng.choice((4, 6, 8))
        plan.cadence = rng.choice(("step", "every"))
    elif s == "healthy_slow":  # loss falls a little at every checkpoint: small LR, linear decay
        plan.optimizer = rng.choice(("adam", "adamw"))
        plan.lr = ORDINARY_LR["adam"][plan.family] * rng.uniform(0.05, 0.15)
        plan.schedule, plan.cadence = "linear", "every"
        plan.log_every = steps // rng.randrange(8, 13)
        plan.eval_every = steps // rng.randrange(3, 9)
    elif s in ("spike_batch", "spike_lr"):
        plan.cadence = rng.choice(("step", "every"))
        plan.log_every = rng.choice((5, 10))
        if s == "spike_lr":
            plan.optimizer = rng.choice(("adam", "adamw"))
            plan.lr = ORDINARY_LR["adam"][plan.family] * _loguniform(rng, 0.5, 2.0)
            plan.schedule = rng.choice(("constant", "cosine", "warmup_cosine", "linear", "step"))
        onsets = sorted(rng.sample(range(int(0.3 * steps), int(0.8 * steps)), rng.choice((1, 1, 2))))
        if len(onsets) == 2 and onsets[1] - onsets[0] < steps // 6:
            onsets = onsets[:1]
        if s == "spike_batch" and plan.writer == "lightning" and plan.cadence == "every":
            # Lightning logs the loss of every N-th batch, not a mean: a bad batch between two
            # logged ones leaves no trace, so it is put on a logged batch.
            onsets = [k - (k + 1) % plan.log_every for k in onsets]
        for k in onsets:
            plan.events[k] = (["corrupt", round(_loguniform(rng, 8, 40), 1)] if s == "spike_batch"
                              else ["lr", round(_loguniform(rng, 40, 200) * (3 if plan.family == "transformer" else 1))])
        if s == "spike_batch":
            plan.clip = 1.0
            plan.schedule = rng.choice(("constant", "cosine", "warmup_cosine", "linear", "step", "onecycle"))
    elif s == "osc_momentum":  # heavy ball on a well-conditioned least squares problem
        plan.optimizer, plan.momentum = "momentum", rng.uniform(0.97, 0.99)
        plan.lr = _loguniform(rng, 0.05, 0.3) if plan.family == "linreg" else _loguniform(rng, 0.02, 0.06)
        plan.schedule, plan.cadence, plan.clip = "constant", "step", None
        plan.n_train = rng.choice((256, 512))
        plan.batch = rng.choice((plan.n_train, 128))
    elif s == "osc_cyclic":
        plan.schedule = rng.choice(("cyclic", "sgdr"))
        plan.sched_params["period"] = rng.choice((30, 40, 60, 80))
        plan.optimizer = rng.choice(("adam", "adamw"))
        plan.lr = ORDINARY_LR["adam"][plan.family] * _loguniform(rng, 20, 60)  # the top of the cycle
        plan.sched_params["base"] = 0.01
        plan.cadence, plan.clip = rng.choice(("step", "every")), 1.0
        plan.log_every = 5
    elif s == "stall_tiny_lr":
        plan.lr *= _loguniform(rng, 1e-5, 1e-4)
    elif s == "stall_early_decay":
        plan.schedule = "early_decay"
        plan.sched_params["at"] = int(steps * rng.uniform(0.03, 0.1))
    elif s == "stall_dead_relu":
        plan.optimizer, plan.lr, plan.clip = "momentum", _loguniform(rng, 0.5, 2.0), None
        plan.schedule = rng.choice(("constant", "cosine", "step"))
    elif s == "stall_blowup_mean":
        plan.optimizer, plan.clip, plan.schedule = "sgd", 1.0, rng.choice(("constant", "cosine"))
        plan.lr = ORDINARY_LR["sgd"][plan.family] * _loguniform(rng, 0.5, 2.0)
        plan.events[rng.randrange(int(0.2 * steps), int(0.5 * steps))] = ["lr", round(_loguniform(rng, 300, 3000))]
    elif s == "stall_unigram":
        plan.optimizer, plan.lr, plan.clip = rng.choice(("adam", "adamw")), _loguniform(rng, 0.02, 0.06), None
        plan.schedule = "constant"
    elif s in ("div_overfit", "div_few_evals"):
        plan.optimizer = rng.choice(("adam", "adamw"))
        plan.lr = ORDINARY_LR["adam"][plan.family] * _loguniform(rng, 1.0, 3.0)
        plan.schedule = rng.choice(("constant", "cosine", "linear"))
        plan.big = plan.family != "transformer"
        plan.label_noise = rng.uniform(0.1, 0.3) if plan.family in CLASSES else 0.0
        plan.batch = rng.choice((8, 16))
        plan.n_train = plan.batch * rng.choice((4, 6, 8))
        plan.cadence = "every" if plan.cadence == "epoch" else plan.cadence
        n_evals = rng.randrange(3, 9) if s == "div_few_evals" else rng.randrange(10, 31)
        plan.eval_every = steps // n_evals
    elif s == "nan_high_lr":
        plan.optimizer, plan.clip = rng.choice(("sgd", "momentum")), None
        plan.lr = ORDINARY_LR[plan.optimizer][plan.family] * _loguniform(rng, 30, 300)
        plan.schedule = rng.choice(("constant", "linear", "warmup_cosine"))
        plan.sched_params["warmup"] = steps // 5
    elif s == "nan_data":
        plan.clip = rng.choice((None, 1.0))
        plan.events[rng.randrange(int(0.2 * steps), int(0.8 * steps))] = ["nan", 0]
    elif s == "explode_clipped":
        plan.clip = 1.0
        plan.schedule, plan.sched_params["top"] = "ramp", 1.0
        if plan.optimizer in ("adam", "adamw"):
            plan.lr = _loguniform(rng, 0.3, 1.0)
        else:
            plan.lr = ORDINARY_LR["sgd"][plan.family] * _loguniform(rng, 50, 200)
