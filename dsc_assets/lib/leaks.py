"""Prompt groups and near-duplicates: what must stay on one side of a split.

Two prompts are *linked* when they share a declared ``group`` (a field of the prompt's line in prompts.jsonl), when
their wording is a near-duplicate (word 3-gram Jaccard >= 0.5 with names masked: "Roast {film} in a short review"
with two films is one wording), or when they name the same multi-word proper noun (a person, a street, a title:
"Tomasz Kowalski ... Duluth" in train and test). A task with ``split: {group_by: linked}`` splits whole connected
components of that graph, so no linked pair can cross splits; the blocking leak check on ``raw_prompts`` fails on
any pair that does (a task splitting by id, or by groups that were declared too narrowly), naming both prompts.

    python -m dsc_assets.lib.leaks prompts/<task>/prompts.jsonl   # every link of every prompt, and the components

A task's split seed is chosen by the sizes it gives, never by a result: ``python -m dsc_assets.lib.splits <task>``.
"""

from __future__ import annotations

import itertools
import re
import sys
from dataclasses import dataclass
from typing import Iterable

JACCARD = 0.5  # word 3-gram Jaccard at or above which two prompts' wordings are one
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'’-]*")
# Two or more capitalized words in a row (allowing "of", "the", "de", ... between), not counting a sentence's first
# word: "Margaret Ellison", "14 Elm Street" -> "Elm Street", "The Great Wall" mid-sentence.
_PROPER = re.compile(
    r"(?<![.!?:\"“]\s)(?<!^)(?<![.!?:\"“])\b[A-Z][\w'’-]+(?:\s+(?:of|the|de|la|van|von|and|&)?\s*[A-Z][\w'’-]+)+"
)


def masked_words(text: str) -> list[str]:
    """Lower-cased words with every capitalized word (a name, a title, a place) as ``<name>`` and every number as
    ``<n>``: what is left is the wording."""
    out = []
    for word in _WORD.findall(text):
        out.append("<name>" if word[0].isupper() else "<n>" if word[0].isdigit() else word.lower())
    return out


def shingles(text: str, n: int = 3) -> frozenset[tuple[str, ...]]:
    words = masked_words(text)
    return frozenset(tuple(words[i : i + n]) for i in range(max(0, len(words) - n + 1)))


def entities(text: str) -> frozenset[str]:
    return frozenset(" ".join(m.group(0).split()) for m in _PROPER.finditer(text))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


@dataclass(frozen=True)
class Link:
    first: str  # prompt ids
    second: str
    reason: str  # "same group 'x'", "wording (Jaccard 0.62)", "both name 'Tomasz Kowalski'"


def links(records: Iterable) -> list[Link]:
    """Every linked pair of prompts (records with ``id``, ``prompt`` and an optional ``group``), in file order."""
    records = list(records)
    grams = [shingles(r.prompt) for r in records]
    names = [entities(r.prompt) for r in records]
    groups = [getattr(r, "group", None) for r in records]
    out = []
    for i, j in itertools.combinations(range(len(records)), 2):
        reason = None
        if groups[i] is not None and groups[i] == groups[j]:
            reason = f"same group {groups[i]!r}"
        elif (similarity := jaccard(grams[i], grams[j])) >= JACCARD:
            reason = f"wording (Jaccard {similarity:.2f})"
        elif shared := sorted(names[i] & names[j]):
            reason = f"both name {shared[0]!r}"
        if reason:
            out.append(Link(records[i].id, records[j].id, reason))
    return out


def components(records: Iterable, found: list[Link] | None = None) -> dict[str, str]:
    """Each prompt id's group under ``group_by: linked``: its connected component of links, named by the component's
    first id in file order (a prompt added later that links nothing leaves every other group as it was)."""
    records = list(records)
    order = {r.id: k for k, r in enumerate(records)}
    parent = {r.id: r.id for r in records}

    def root(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for link in links(records) if found is None else found:
        a, b = root(link.first), root(link.second)
        if a != b:
            first, second = sorted((a, b), key=order.__getitem__)
            parent[second] = first
    return {r.id: root(r.id) for r in records}


def cross_split_links(records: Iterable, split_of, found: list[Link] | None = None) -> list[tuple[Link, str, str]]:
    """Linked pairs whose prompts are in different splits (``split_of(id)``), with both splits (``found``: the
    records' links, when the caller has them)."""
    return [
        (link, split_of(link.first), split_of(link.second))
        for link in (links(records) if found is None else found)
        if split_of(link.first) != split_of(link.second)
    ]


def main(argv: list[str]) -> int:
    import json
    from collections import Counter
    from types import SimpleNamespace

    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as lines:
        records = [SimpleNamespace(group=None, **json.loads(line)) for line in lines if line.strip()]
    found = links(records)
    for link in found:
        print(f"{link.first} ~ {link.second}: {link.reason}")
    sizes = Counter(components(records, found).values())
    print(
        f"{len(records)} prompts, {len(found)} links, {len(sizes)} groups; largest: "
        + ", ".join(f"{g} ({n})" for g, n in sizes.most_common(5))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
