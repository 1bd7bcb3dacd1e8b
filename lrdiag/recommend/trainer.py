"""The trainer protocol a replay drives, and how `--trainer module:attr` or `path/file.py:attr` is loaded.

Two forms, whichever is closer to the loop you have (docs/replay.md shows both, and Lightning):

* a function `trainer(seed, device) -> Setup`: builds the model (on `device`), its batches in a
  fixed order for the seed, the loss and an optimizer factory; lrdiag runs the loop;
* a class with `setup(seed, device) -> optimizer` and `step(step) -> float` (one optimizer step,
  returning the training loss); lrdiag constructs it with no arguments, once per replay.

Both may add `evaluate` (a held-out loss: the horizon loss that candidates are compared on) and
`load_checkpoint` (restore the state at a step, for `--from-checkpoint`). lrdiag seeds torch,
numpy and random with the seed before building, and attaches the schedule to the optimizer.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from lrdiag.errors import LrdiagError


@dataclass
class Setup:
    """What a trainer function returns for one seed and device."""

    model: Any  # a torch.nn.Module, already on the device
    batches: Iterable  # the same order for the same seed; iterated again when it runs out
    loss: Callable[[Any, Any], Any]  # loss(model, batch) -> scalar tensor
    optimizer: Callable[[Iterable], Any]  # optimizer(model.parameters()) -> torch.optim.Optimizer
    evaluate: Callable[[Any], float] | None = None  # evaluate(model) -> held-out loss
    load_checkpoint: Callable[[int, Any, Any], None] | None = None  # (step, model, optimizer)


class Trainer(Protocol):
    def setup(self, seed: int, device: str) -> Any: ...  # returns the optimizer

    def step(self, step: int) -> float: ...  # one optimizer step; the training loss

    # Optional: evaluate(self) -> float; load_checkpoint(self, step: int) -> None


class FunctionTrainer:
    """A `trainer(seed, device) -> Setup` function seen through the class protocol."""

    def __init__(self, function: Callable[[int, str], Setup]):
        self.function = function

    def setup(self, seed: int, device: str):
        self.parts = self.function(seed, device)
        missing = [name for name in ("model", "batches", "loss", "optimizer") if not hasattr(self.parts, name)]
        if missing:
            raise TypeError(f"the trainer function returned {type(self.parts).__name__}, which lacks "
                            f"{', '.join(missing)}; return lrdiag.recommend.trainer.Setup(...)")
        self.optimizer = self.parts.optimizer(self.parts.model.parameters())
        self.batches = _forever(self.parts.batches)
        return self.optimizer

    def step(self, step: int) -> float:
        self.parts.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.parts.loss(self.parts.model, next(self.batches))
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    @property
    def evaluate(self):
        if getattr(self.parts, "evaluate", None) is None:
            return None
        return self._evaluate

    def _evaluate(self) -> float:
        import torch

        self.parts.model.eval()
        with torch.no_grad():
            return float(self.parts.evaluate(self.parts.model))

    @property
    def load_checkpoint(self):
        if getattr(self.parts, "load_checkpoint", None) is None:
            return None
        return self._load_checkpoint

    def _load_checkpoint(self, step: int) -> None:
        self.parts.load_checkpoint(step, self.parts.model, self.optimizer)
        # The original run had consumed `step` batches by then: continue its data order.
        self.batches = itertools.islice(self.batches, step, None)


def _forever(batches: Iterable):
    """Epoch after epoch of the batches; a pass that yields nothing is an exhausted generator, not an epoch."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("the trainer's batches ran out: a generator can be iterated once only, so make it "
                             "endless, or pass a DataLoader or a list")


def load(spec: str) -> Callable[[], Trainer]:
    """A factory of fresh trainers for `module:attr` or `path/to/file.py:attr`; a user error if it won't load."""
    target, sep, attribute = spec.rpartition(":")
    if not sep or not target or not attribute:
        raise LrdiagError(f"--trainer {spec!r}: expected module:function or path/to/file.py:function")
    try:
        module = _import(target)
    except LrdiagError:
        raise
    except (Exception, SystemExit) as error:  # noqa: BLE001 - whatever the user's module raises on import
        raise LrdiagError(f"--trainer {spec!r}: importing {target} failed: {type(error).__name__}: {error}") from None
    found = getattr(module, attribute, None)
    if found is None:
        raise LrdiagError(f"--trainer {spec!r}: {target} has no attribute {attribute!r}")
    if isinstance(found, type):
        if not callable(getattr(found, "setup", None)) or not callable(getattr(found, "step", None)):
            raise LrdiagError(f"--trainer {spec!r}: class {attribute} needs setup(seed, device) and step(step) methods")
        return found
    if not callable(found):
        raise LrdiagError(f"--trainer {spec!r}: {attribute} is a {type(found).__name__}, not a function or class")
    return lambda: FunctionTrainer(found)


def check_checkpoint(spec: str) -> None:
    """A usage error, before any replay runs, when `--from-checkpoint` meets a trainer that cannot load a
    checkpoint: a class without `load_checkpoint`, or a function whose Setup has none (the function is
    called once here, with seed 0 on the CPU, to see its Setup)."""
    factory = load(spec)
    if isinstance(factory, type):
        has = callable(getattr(factory, "load_checkpoint", None))
    else:
        function = factory().function
        try:
            parts = function(0, "cpu")
        except Exception as error:  # noqa: BLE001 - whatever the user's function raises
            raise LrdiagError(f"--trainer {spec!r}: calling it to see its Setup failed: "
                              f"{type(error).__name__}: {error}".replace("\n", " ")) from None
        has = callable(getattr(parts, "load_checkpoint", None))
    if not has:
        raise LrdiagError(f"--from-checkpoint needs a trainer that restores a checkpoint, and {spec} has no "
                          "load_checkpoint (docs/replay.md shows one)")


def resolve(spec: str) -> str:
    """The spec with a file path made absolute, so that worker processes elsewhere find it."""
    target, sep, attribute = spec.rpartition(":")
    if sep and _is_path(target):
        return f"{Path(target).resolve()}:{attribute}"
    return spec


def _is_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _import(target: str):
    if not _is_path(target):
        return importlib.import_module(target)
    path = Path(target)
    if not path.is_file():
        raise LrdiagError(f"--trainer: no such file {target}")
    name = f"lrdiag_trainer_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, str(path.resolve().parent))  # so that the file can import its neighbours
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
