"""Model aliases: other names a running model answers to (`fleet launch ... --alias
claude-sonnet-4-5`), so that a client that insists on a model name works unchanged.

An alias is a name like a model uid: it names one model at a time, never a running model's uid
nor another model's alias, and it goes with its model. It lives outside fleet.api because the
launch request (fleet.launch_request) and the supervisor check it too."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated

from pydantic import Field

from fleet.errors import BadRequest

MAX_ALIASES = 32
# What clients send as a model name: "gpt-4o", "claude-sonnet-4-5", "org/model:tag". No spaces,
# nothing that a URL path or a shell would need quoting for.
ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}$"
_ALIAS = re.compile(ALIAS_PATTERN)
# An alias in a request body: the pattern is in the API's document, so clients see the rule.
AliasName = Annotated[str, Field(pattern=ALIAS_PATTERN, max_length=200)]
# The routing table's events carry model uids; this name, which no uid can be, says the
# aliases changed (fleet.cluster.supervisor.route_events, fleet.api.routing).
ALIASES_CHANGED = "\x00aliases"


def check_alias_names(aliases: Iterable[str]) -> list[str]:
    """The aliases, each a valid name, in order, without repeats; ValueError naming the bad one."""
    names = list(dict.fromkeys(aliases))
    if len(names) > MAX_ALIASES:
        raise ValueError(f"a model takes at most {MAX_ALIASES} aliases, not {len(names)}")
    for name in names:
        if not isinstance(name, str) or not _ALIAS.fullmatch(name):
            raise ValueError(f"alias {name!r} is not a model name: letters, digits and . _ : @ "
                             "/ + - (first a letter or digit), at most 200 characters")
        if name in ("estimate", "instances"):  # routes under /v1/models, not models
            raise ValueError(f"alias {name!r} is reserved")
    return names


def check_aliases_free(uid: str, aliases: Iterable[str], uids: Iterable[str],
                       taken: Mapping[str, str]) -> None:
    """BadRequest (code `alias_taken`) when an alias of `uid` is a running model's uid or
    another model's alias; `taken`: alias -> the uid it names now."""
    running = set(uids)
    for alias in aliases:
        if alias == uid or alias in running:
            raise BadRequest(f"alias {alias!r} is the uid of a running model", code="alias_taken")
        owner = taken.get(alias)
        if owner is not None and owner != uid:
            raise BadRequest(f"alias {alias!r} already names model {owner!r}; remove it there "
                             "first", code="alias_taken")
