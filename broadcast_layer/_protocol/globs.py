"""Room-search globs: parsed and bounded here, matched inside Redis by ``scripts.GLOB``.

A glob is checked in Python before anything goes to Redis and compiled into tokens for
the Lua matcher, which backtracks only to the last ``*``: matching one name costs at
most (len(name) + 1) x (tokens + 1) steps, whatever the pattern. Syntax and limits are
in docs/registry.md and docs/limits.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..exceptions import InvalidPattern
from .validation import NAME_CHARACTERS

__all__ = ["MAX_GLOB_LENGTH", "MAX_GLOB_WILDCARDS", "Glob", "compile_glob"]

#: A glob is at most this many characters.
MAX_GLOB_LENGTH = 200
#: A glob holds at most this many wildcards: ``*``, ``?`` and ``[...]`` each count one.
MAX_GLOB_WILDCARDS = 32


@dataclass(frozen=True, slots=True)
class Glob:
    """A checked glob: its literal start and the matcher's tokens.

    ``tokens`` are ``"*"``, ``"?"``, ``"=c"`` (the character c) and ``"+ranges"`` /
    ``"-ranges"`` (a class, or a negated one; ``ranges`` is pairs of first and last
    character). Consecutive ``*`` are one token.
    """

    text: str
    prefix: str
    tokens: tuple[str, ...]

    @property
    def matches_everything(self) -> bool:
        """True for ``*`` (and ``**``...): no filter is needed."""
        return self.tokens == ("*",)

    def matches(self, name: str) -> bool:
        """Whether ``name`` matches, in Python (for config globs; same rules as the Lua).

        Backtracks only to the last ``*``, so a name costs at most
        (len(name) + 1) x (len(tokens) + 1) steps.
        """
        tokens, n, p, star, mark = self.tokens, 0, 0, -1, 0
        while n < len(name):
            token = tokens[p] if p < len(tokens) else ""
            if token == "*":
                star, mark, p = p, n, p + 1
                continue
            if token and _token_matches(token, name[n]):
                n, p = n + 1, p + 1
            elif star >= 0:
                mark += 1
                n, p = mark, star + 1
            else:
                return False
        while p < len(tokens) and tokens[p] == "*":
            p += 1
        return p == len(tokens)


def _token_matches(token: str, char: str) -> bool:
    kind = token[0]
    if kind == "=":
        return token[1] == char
    if kind == "?":
        return True
    ranges = token[1:]
    inside = any(ranges[i] <= char <= ranges[i + 1] for i in range(0, len(ranges), 2))
    return inside == (kind == "+")


def _fail(pattern: str, reason: str) -> InvalidPattern:
    shown = pattern if len(pattern) <= 40 else pattern[:37] + "..."
    return InvalidPattern(f"Invalid room pattern {shown!r}: {reason}")


def _class(pattern: str, start: int) -> tuple[str, int]:
    """The token for the class opening at ``pattern[start]``, and the index after it."""
    end = pattern.find("]", start + 1)
    if end < 0:
        raise _fail(pattern, f"'[' at position {start + 1} is never closed")
    body, negate = pattern[start + 1 : end], False
    if body.startswith("!"):
        body, negate = body[1:], True
    if not body:
        raise _fail(pattern, f"the class at position {start + 1} is empty")
    ranges, i = [], 0
    while i < len(body):
        first = last = body[i]
        # "a-z" is a range; a "-" first or last in the class is the character itself.
        if i + 2 < len(body) and body[i + 1] == "-":
            last, i = body[i + 2], i + 3
        else:
            i += 1
        for char in (first, last):
            if char not in NAME_CHARACTERS:
                raise _fail(pattern, f"{char!r} in a class can never be in a room name")
        if first > last:
            raise _fail(pattern, f"the range {first}-{last} is reversed")
        ranges.append(first + last)
    return ("-" if negate else "+") + "".join(ranges), end + 1


def compile_glob(pattern: str) -> Glob:
    """Check a shell glob over whole room names and compile it for the Lua matcher.

    Syntax: ``*`` (any run of characters), ``?`` (one character), ``[abc]``, ``[a-z]``
    and ``[!abc]`` (one character in, or not in, the class); every other character is
    itself and must be one a room name can hold. Raises :class:`InvalidPattern` for
    anything else, or past :data:`MAX_GLOB_LENGTH` / :data:`MAX_GLOB_WILDCARDS`.
    """
    if not isinstance(pattern, str):
        raise InvalidPattern(f"A room pattern must be a string, got {type(pattern).__name__}")
    if len(pattern) > MAX_GLOB_LENGTH:
        raise _fail(pattern, f"longer than {MAX_GLOB_LENGTH} characters")
    tokens: list[str] = []
    wildcards, i, prefix_end = 0, 0, None
    while i < len(pattern):
        char = pattern[i]
        if char in "*?[":
            wildcards += 1
            prefix_end = len(tokens) if prefix_end is None else prefix_end
        if char == "*":
            if not tokens or tokens[-1] != "*":
                tokens.append("*")
            i += 1
        elif char == "?":
            tokens.append("?")
            i += 1
        elif char == "[":
            token, i = _class(pattern, i)
            tokens.append(token)
        elif char in NAME_CHARACTERS:
            tokens.append("=" + char)
            i += 1
        else:
            raise _fail(pattern, f"{char!r} can never be in a room name")
    if wildcards > MAX_GLOB_WILDCARDS:
        raise _fail(pattern, f"more than {MAX_GLOB_WILDCARDS} wildcards (*, ? and [...])")
    literal = tokens if prefix_end is None else tokens[:prefix_end]
    return Glob(pattern, "".join(token[1] for token in literal), tuple(tokens))
