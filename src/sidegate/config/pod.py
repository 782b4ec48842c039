"""The ``pod:`` and ``profiles:`` sections: per-version policy, chosen by the pod's labels.

    pod:
      labels_file: /etc/podinfo/labels        # the downward API file (the default)
      labels_env: POD_LABELS                  # or: k=v,k2=v2 in this variable (wins when set)
    profiles:
      - name: canary
        match: {version: v2, track: [canary, beta]}   # every label listed must have that value
        patch:                                        # (or one of the values listed)
          routes:
            - name: api                               # merges into the route named api
              filters: {rate_limit: {requests: 5, per: 1s}}

These models check the sections' shape only; the merge itself (every matching profile, in the
order written, on top of the base) is :mod:`sidegate.config.profiles`, and the merged result is
validated as a whole by :class:`~sidegate.config.model.SidegateConfig`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from sidegate.config.fields import OrPlainString, scalar_to_str

DEFAULT_LABELS_FILE = "/etc/podinfo/labels"
#: Top-level keys a profile's patch may not change: they choose the profiles.
NOT_PATCHABLE = ("profiles", "pod")


# Kubernetes' label syntax: a value no label can hold makes a profile that can never match.
_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
_LABEL_KEY = re.compile(rf"(?:{_PREFIX}/)?{_NAME}")
_LABEL_VALUE = re.compile(rf"(?:{_NAME})?")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _values(value: object) -> object:
    """``version: v2`` or ``version: [v2, v3]``; YAML's ``2`` and ``true`` are label text."""
    if isinstance(value, list):
        return [scalar_to_str(item) for item in value]
    return [scalar_to_str(value)]


def _label_values(values: list[str]) -> list[str]:
    for value in values:
        if not _LABEL_VALUE.fullmatch(value):
            raise ValueError(
                f"{value!r} can never be a label's value (at most 63 of A-Z a-z 0-9 - _ ., "
                "starting and ending with a letter or digit), so this profile would never match"
            )
    return values


def _label_key(key: str) -> str:
    if not _LABEL_KEY.fullmatch(key) or len(key) > 317:
        msg = f"{key!r} is not a Kubernetes label key (e.g. version, app.kubernetes.io/version)"
        raise ValueError(msg)
    return key


LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValues = Annotated[
    list[str], BeforeValidator(_values), AfterValidator(_label_values), OrPlainString(), Field(min_length=1)
]


class Pod(_Model):
    """Where the pod's labels are read from (only when ``profiles:`` has an entry)."""

    labels_file: str = Field(
        default=DEFAULT_LABELS_FILE,
        min_length=1,
        description="the downward API labels file (a directory mount, never subPath: see README)",
    )
    labels_env: str | None = Field(
        default=None,
        min_length=1,
        description="an environment variable holding the labels as k=v,k2=v2; wins over labels_file",
    )


class Profile(_Model):
    """An overlay applied on top of the base config when the pod's labels match."""

    name: str = Field(min_length=1, description="unique profile name (shown in /config_dump and logs)")
    match: dict[LabelKey, LabelValues] = Field(
        min_length=1, description="labels the pod must have: a value, or a list of accepted values"
    )
    patch: dict[str, Any] = Field(
        default_factory=dict,
        description="the overlay: maps merge key by key, routes and consumers by name, other lists "
        "are replaced; null deletes a key, {name: X, $patch: delete} an item",
    )

    @field_validator("patch")
    @classmethod
    def _not_the_selectors(cls, patch: dict[str, Any]) -> dict[str, Any]:
        for key in NOT_PATCHABLE:
            if key in patch:
                msg = f"a profile cannot patch `{key}` (it chooses the profiles); move it to the base"
                raise ValueError(msg)
        return patch
