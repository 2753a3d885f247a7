"""A small reader for `docker-compose.yaml`: the same settings, run as local processes.

It does what `docker compose config` does for the parts this project uses: YAML anchors and merge keys,
`${VAR}` interpolation (`:-`, `-`, `:?`, `?`, `:+`, `+`, nested defaults, `$$`), `environment` in list or
mapping form, `command`/`entrypoint` as string or list, and `profiles`. `ComposeFile.process_spec()` then turns
one service into an argv and an environment for a local process, translating the container network and file
layout (service names, image paths) into local equivalents. The scale-out test and `bench/scaleout.py` start
Airflow's components from it, so what they verify is what the compose file deploys.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class ComposeError(ValueError):
    """The compose file or an interpolation in it is invalid (as `docker compose config` would say)."""


@dataclass(frozen=True)
class VariableUse:
    """One `${NAME...}` in the file: its operator (`""`, `:-`, `?`, ...) and the text after the operator."""

    name: str
    operator: str
    argument: str

    @property
    def required(self) -> bool:
        return self.operator in (":?", "?")

    @property
    def has_default(self) -> bool:
        return self.operator in (":-", "-")


@dataclass
class ProcessSpec:
    """A compose service as a local process: what to run and with which environment."""

    name: str
    argv: list[str]
    env: dict[str, str]
    profiles: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def read_env_file(path: str | Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Parse a compose `.env` file: `KEY=value` lines, `#` comments, optional `export `, quoted values.

    As in Compose, unquoted and double-quoted values expand `${KEY}` from keys above them (then `environ`);
    single-quoted values are literal."""
    values: dict[str, str] = {}
    scope: dict[str, str] = dict(environ or {})
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _NAME.fullmatch(key):
            raise ComposeError(f"{path}:{number}: expected KEY=value")
        value = value.strip()
        if value[:1] in ("'", '"'):
            quote = value[0]
            end = value.find(quote, 1)
            if end < 0:
                raise ComposeError(f"{path}:{number}: unterminated quote")
            inner = value[1:end]
            values[key] = interpolate(inner, scope).replace("\\n", "\n") if quote == '"' else inner
        else:
            # An unquoted value ends at ` #` (an inline comment).
            values[key] = interpolate(re.split(r"\s+#", value, maxsplit=1)[0].rstrip(), scope)
        scope[key] = values[key]
    return values


def documented_keys(path: str | Path) -> set[str]:
    """Keys an `.env` file sets or documents in a commented-out `# KEY=value` line."""
    keys = set()
    for raw in Path(path).read_text().splitlines():
        match = re.match(r"^\s*#?\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=", raw)
        if match:
            keys.add(match.group(1))
    return keys


def _braced_end(text: str, start: int) -> int:
    """Index of the `}` closing the `${` whose body starts at `start` (nested `${...}` allowed)."""
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ComposeError(f"unterminated ${{ in {text!r}")


def _split_braced(body: str) -> tuple[str, str, str]:
    match = _NAME.match(body)
    if not match:
        raise ComposeError(f"invalid interpolation ${{{body}}}")
    name, rest = match.group(0), body[match.end() :]
    if not rest:
        return name, "", ""
    for operator in _OPERATORS:
        if rest.startswith(operator):
            return name, operator, rest[len(operator) :]
    raise ComposeError(f"invalid interpolation ${{{body}}}")


def iter_variables(text: str) -> Iterator[VariableUse]:
    """Every variable `text` refers to, including those inside defaults (`${A:-${B}}`)."""
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
        elif text.startswith("${", i):
            end = _braced_end(text, i + 2)
            name, operator, argument = _split_braced(text[i + 2 : end])
            yield VariableUse(name, operator, argument)
            yield from iter_variables(argument)
            i = end + 1
        elif text.startswith("$", i) and (match := _NAME.match(text, i + 1)):
            yield VariableUse(match.group(0), "", "")
            i = match.end()
        else:
            i += 1


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Substitute `${VAR}` forms as Compose does; `${VAR:?message}` raises `ComposeError(message)`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _braced_end(text, i + 2)
            name, operator, argument = _split_braced(text[i + 2 : end])
            out.append(_substitute(name, operator, argument, variables))
            i = end + 1
        elif text.startswith("$", i) and (match := _NAME.match(text, i + 1)):
            out.append(variables.get(match.group(0), ""))
            i = match.end()
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _substitute(name: str, operator: str, argument: str, variables: Mapping[str, str]) -> str:
    value = variables.get(name)
    is_set, non_empty = value is not None, bool(value)
    if operator == ":-":
        return value if non_empty else interpolate(argument, variables)  # type: ignore[return-value]
    if operator == "-":
        return value if is_set else interpolate(argument, variables)  # type: ignore[return-value]
    if operator in (":?", "?"):
        if (operator == ":?" and not non_empty) or (operator == "?" and not is_set):
            message = interpolate(argument, variables) or f"{name} is required"
            raise ComposeError(f"required variable {name} is missing a value: {message}")
        return value or ""
    if operator == ":+":
        return interpolate(argument, variables) if non_empty else ""
    if operator == "+":
        return interpolate(argument, variables) if is_set else ""
    return value or ""


def _interpolate_tree(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [_interpolate_tree(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, variables) for key, value in node.items()}
    return node


def _walk_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _walk_strings(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _walk_strings(value)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def rewrite_addresses(value: str, addresses: Mapping[str, str]) -> str:
    """Replace container addresses (`service:port`, optionally with a path such as `redis:6379/0`) that follow
    `//` or `@` in URLs by local ones; the longest key wins."""
    for key in sorted(addresses, key=len, reverse=True):
        value = re.sub(
            r"(?<=[/@])" + re.escape(key) + r"(?![\w.-])", addresses[key].replace("\\", r"\\"), value
        )
    return value


def rewrite_paths(value: str, paths: Mapping[str, str]) -> str:
    """Replace container path prefixes (`/usr/local/airflow/dags`) by local folders; the longest key wins."""
    for key in sorted(paths, key=len, reverse=True):
        value = re.sub(
            r"(?<![\w/.-])" + re.escape(key) + r"(?=/|$|[\s'\":;])", paths[key].replace("\\", r"\\"), value
        )
    return value


class ComposeFile:
    """A parsed compose file: `raw` as written (anchors and merges resolved), `data` after interpolation."""

    def __init__(self, path: str | Path, variables: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.text = self.path.read_text()
        raw = yaml.safe_load(self.text)
        if not isinstance(raw, dict):
            raise ComposeError(f"{self.path}: not a mapping")
        self.raw: dict[str, Any] = raw
        self.variables: dict[str, str] = dict(variables or {})
        self.data: dict[str, Any] = _interpolate_tree(raw, self.variables)

    @classmethod
    def with_env_file(
        cls, path: str | Path, env_file: str | Path, overrides: Mapping[str, str] | None = None
    ) -> ComposeFile:
        """Interpolate with the values of an `.env` file, then `overrides` (as the shell environment would)."""
        variables = read_env_file(env_file)
        variables.update(overrides or {})
        return cls(path, variables)

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        return dict(self.data.get("services") or {})

    def variable_uses(self) -> list[VariableUse]:
        """Every `${...}` written in the file (before anchors are expanded, so each use is listed once)."""
        uses: list[VariableUse] = []
        for text in _walk_strings(yaml.safe_load(self.text)):
            uses.extend(iter_variables(text))
        return uses

    def profiles(self, service: str) -> tuple[str, ...]:
        return tuple(self.services[service].get("profiles") or ())

    def environment(self, service: str) -> dict[str, str]:
        """The service's `environment`, as strings (a key without a value takes it from the variables)."""
        env = self.services[service].get("environment") or {}
        if isinstance(env, list):
            pairs: dict[str, Any] = {}
            for item in env:
                key, sep, value = str(item).partition("=")
                pairs[key] = value if sep else None
            env = pairs
        return {
            str(key): (self.variables.get(str(key), "") if value is None else _scalar(value))
            for key, value in env.items()
        }

    def command(self, service: str) -> list[str]:
        """`entrypoint` + `command` as an argv (a string is split as Compose does, with shell rules)."""
        spec = self.services[service]
        argv: list[str] = []
        for key in ("entrypoint", "command"):
            value = spec.get(key)
            if value is None:
                continue
            argv.extend(shlex.split(value) if isinstance(value, str) else [_scalar(v) for v in value])
        return argv

    def process_spec(
        self,
        service: str,
        *,
        addresses: Mapping[str, str] | None = None,
        paths: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        env_overrides: Mapping[str, str] | None = None,
        extra_args: list[str] | None = None,
        name: str | None = None,
    ) -> ProcessSpec:
        """The service as a local process: `base_env` (PATH etc.), then the service's environment with container
        addresses and paths translated, then `env_overrides` (what only differs because it is one machine)."""
        if service not in self.services:
            raise ComposeError(f"no service {service!r} in {self.path}")
        addresses = addresses or {}
        paths = paths or {}

        def local(value: str) -> str:
            return rewrite_paths(rewrite_addresses(value, addresses), paths)

        env = dict(base_env or {})
        env.update({key: local(value) for key, value in self.environment(service).items()})
        env.update(env_overrides or {})
        argv = [local(arg) for arg in self.command(service)] + list(extra_args or [])
        return ProcessSpec(name=name or service, argv=argv, env=env, profiles=self.profiles(service))
