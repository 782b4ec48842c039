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

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from sidegate.config.fields import OrPlainString, scalar_to_str

DEFAULT_LABELS_FILE = "/etc/podinfo/labels"
#: Top-level keys a profile's patch may not change: they choose the profiles.
NOT_PATCHABLE = ("profiles", "pod")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _values(value: object) -> object:
    """``version: v2`` or ``version: [v2, v3]``; YAML's ``2`` and ``true`` are label text."""
    if isinstance(value, list):
        return [scalar_to_str(item) for item in value]
    return [scalar_to_str(value)]


LabelValues = Annotated[list[str], BeforeValidator(_values), OrPlainString(), Field(min_length=1)]


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
    match: dict[str, LabelValues] = Field(
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
