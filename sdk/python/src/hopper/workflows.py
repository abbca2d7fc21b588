"""Workflow builders: a small DAG of jobs — chains, groups, chords, nested —
as `POST /v1/workflows` takes it.

They mirror the Rust builders of `shared/src/workflows.rs` and produce the
same wire form: a task node is `{"task": "echo", "args": {...}, "input"?:
"arg", "max_attempts"?: n}`, the others `{"chain": [...]}`, `{"group":
[...]}` and `{"chord": {"header": [...], "body": node}}`. A chain passes each
step's result to the next step; a group's result is its members' results in
order; a chord's body gets its header's results in order. A node that waits
for others gets their results in one argument (`input`, by default
`"input"`), so its own `args` must be an object without it.

```python
from hopper import Workflow, chain, chord, task

flow = Workflow(
    chain(task("fetch", {"url": u}), chord([task("resize", {"w": 64})], task("publish"))),
    name="thumbnails",
)
client.submit_workflow(flow)
```

The builders check only what Python's types cannot say (a node is a node,
`on_failure` is `stop` or `continue`, `max_attempts` at least 1); the API
checks the rest — task names, arguments, the shape — and answers 422
`invalid_workflow` naming the JSON path (`root.chain[1].args`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

#: What a node failing for good does to the rest of its workflow.
OnFailure = Literal["stop", "continue"]
ON_FAILURE: frozenset[str] = frozenset({"stop", "continue"})


@dataclass(frozen=True)
class TaskNode:
    """One job of `task` with `args` (a leaf of the DAG)."""

    task: str
    args: Any
    input: str | None = None
    max_attempts: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The wire form: `{"task", "args", "input"?, "max_attempts"?}`."""
        out: dict[str, Any] = {"task": self.task, "args": self.args}
        if self.input is not None:
            out["input"] = self.input
        if self.max_attempts is not None:
            out["max_attempts"] = self.max_attempts
        return out


@dataclass(frozen=True)
class Chain:
    """Steps one after another, each given the previous one's result."""

    steps: tuple[Node, ...]

    def to_json(self) -> dict[str, Any]:
        """The wire form: `{"chain": [...]}`."""
        return {"chain": [s.to_json() for s in self.steps]}


@dataclass(frozen=True)
class Group:
    """Members side by side; their results, in order, are the group's."""

    members: tuple[Node, ...]

    def to_json(self) -> dict[str, Any]:
        """The wire form: `{"group": [...]}`."""
        return {"group": [m.to_json() for m in self.members]}


@dataclass(frozen=True)
class Chord:
    """A group (`header`), then `body` given all their results in order."""

    header: tuple[Node, ...]
    body: Node

    def to_json(self) -> dict[str, Any]:
        """The wire form: `{"chord": {"header": [...], "body": node}}`."""
        return {
            "chord": {"header": [h.to_json() for h in self.header], "body": self.body.to_json()}
        }


#: Any node of a workflow.
Node = TaskNode | Chain | Group | Chord
_NODE_TYPES = (TaskNode, Chain, Group, Chord)


def _nodes(items: Iterable[Any], what: str) -> tuple[Node, ...]:
    out = tuple(items)
    for i, n in enumerate(out):
        if not isinstance(n, _NODE_TYPES):
            raise TypeError(
                f"{what}[{i}] is a {type(n).__name__}, not a node "
                "(build one with task, chain, group or chord)"
            )
    return out


def task(
    name: str,
    args: Mapping[str, Any] | None = None,
    *,
    input: str | None = None,
    max_attempts: int | None = None,
) -> TaskNode:
    """A job of task `name` with `args` (default `{}`). `input` names the argument that
    receives its upstream results (default `"input"`); `max_attempts` overrides the task's."""
    if not isinstance(name, str):
        raise TypeError(f"a task name is a str, not a {type(name).__name__}")
    if max_attempts is not None and max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
    return TaskNode(name, dict(args) if args is not None else {}, input, max_attempts)


def chain(*steps: Node) -> Chain:
    """Steps run one after another, each given the previous one's result."""
    return Chain(_nodes(steps, "chain"))


def group(*members: Node) -> Group:
    """Members run side by side; their results, in order, are the group's."""
    return Group(_nodes(members, "group"))


def chord(header: Iterable[Node], body: Node) -> Chord:
    """`header` run side by side, then `body` with all their results in order."""
    if not isinstance(body, _NODE_TYPES):
        raise TypeError(f"a chord's body is a node, not a {type(body).__name__}")
    return Chord(_nodes(header, "chord header"), body)


class Workflow:
    """A workflow to submit: its DAG (`root`), an optional `name` for people, and what a
    node failing for good does — `"stop"` (the default: nodes not started are skipped,
    running ones cancelled) or `"continue"` (dependents get `{"failed": {...}}` in its
    place)."""

    def __init__(
        self, root: Node, *, name: str | None = None, on_failure: OnFailure = "stop"
    ) -> None:
        if not isinstance(root, _NODE_TYPES):
            raise TypeError(f"a workflow's root is a node, not a {type(root).__name__}")
        if on_failure not in ON_FAILURE:
            raise ValueError(f"on_failure is `stop` or `continue`, not {on_failure!r}")
        self.root = root
        self.name = name
        self.on_failure: OnFailure = on_failure

    def to_json(self) -> dict[str, Any]:
        """The body of `POST /v1/workflows`: `{"name"?, "on_failure", "root"}`."""
        out: dict[str, Any] = {"on_failure": self.on_failure, "root": self.root.to_json()}
        if self.name is not None:
            out["name"] = self.name
        return out

    def __repr__(self) -> str:
        return f"Workflow({self.root!r}, name={self.name!r}, on_failure={self.on_failure!r})"
