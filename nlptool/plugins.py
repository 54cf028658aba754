"""Your own objectives, tasks and models, chosen from the config with no change to nlptool.

    nlptool pretrain objective._target_=mylab.objectives.SpanMasking +objective.params.span=3
    nlptool finetune task._target_=mylab.tasks.Toxicity task.train_file=... task.valid_file=...
    nlptool pretrain model._target_=mylab.models.MyEncoder

`_target_` is a dotted path `module.Class`; the module is imported from PYTHONPATH or the working
directory. What each class receives and must provide is written down as a Protocol:
`nlptool.objectives.base.CustomObjective`, `nlptool.tasks.base.Task` (subclass one of the built-in
tasks to change only what differs) and `nlptool.models.config.ModelProtocol`. A target that
cannot be imported, constructed or does not fit its contract stops the run with one paragraph
naming the target and what was expected. `examples/custom_components` has a complete example.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import types
from typing import Any

from nlptool.errors import UserError


def load_target(target: str, key: str) -> Any:
    """The object `target` ("package.module.Name") names, imported; a UserError otherwise."""
    module_name, _, name = str(target).rpartition(".")
    if not module_name or not name:
        raise UserError(f"{key}._target_={target!r}: expected a dotted path, module.Class")
    if os.getcwd() not in sys.path:  # (the console script does not put it there)
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise UserError(
            f"{key}._target_={target}: no module named {err.name!r} (searched PYTHONPATH and "
            f"the working directory {os.getcwd()}); check the spelling, or add the folder that "
            "holds the package to PYTHONPATH"
        ) from None
    except Exception as err:  # the user's module itself failed while importing
        raise UserError(
            f"{key}._target_={target}: importing {module_name} failed: {type(err).__name__}: {err}"
        ) from None
    found = getattr(module, name, None)
    if found is None:
        names = sorted(n for n, v in vars(module).items() if inspect.isclass(v) and n[0] != "_")
        raise UserError(
            f"{key}._target_={target}: {module_name} has no {name!r} (its classes: "
            f"{', '.join(names) or 'none'})"
        )
    return found


def instantiate(
    target: str, key: str, contract: str, required: tuple[str, ...], *args: Any, **kwargs: Any
) -> Any:
    """`target(*args, **kwargs)`, checked to have the `required` attributes of `contract`."""
    cls = load_target(target, key)
    try:
        obj = cls(*args, **kwargs)
    except ValueError as err:  # the class checked its arguments and refused them
        raise UserError(f"{key}._target_={target}: could not construct it: {err}") from None
    except TypeError as err:
        try:
            signature = f"{cls.__name__}{inspect.signature(cls)}"
        except (TypeError, ValueError):
            signature = cls.__name__
        given = ", ".join([*(type(a).__name__ for a in args), *(f"{k}=..." for k in kwargs)])
        raise UserError(
            f"{key}._target_={target}: could not construct it with ({given}): {err}. Its "
            f"signature is {signature}; nlptool passes the {key} config"
            + (f" and {key}.params ({', '.join(kwargs)})" if kwargs else "")
            + f" (see {contract})"
        ) from None
    missing = [name for name in required if not hasattr(obj, name)]
    if missing:
        raise UserError(
            f"{key}._target_={target} does not fit the contract of {contract}: it has no "
            f"{', '.join(missing)} (needed: {', '.join(required)})"
        )
    return obj


def complete(obj: Any, parts: dict[str, Any]) -> Any:
    """Give a plug-in object the optional parts of its protocol it lacks: values as they are,
    functions bound to it under their own names (so it still pickles for DataLoader workers)."""
    for name, value in parts.items():
        if not hasattr(obj, name):
            setattr(obj, name, types.MethodType(value, obj) if inspect.isfunction(value) else value)
    return obj
