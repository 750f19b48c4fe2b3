"""Gantry claim policy for Kubernetes projected service-account tokens.

Implements the `claim-policy` world of `wit/gantry-policy@0.1.0/policy.wit`. The settings name
the namespaces (and optionally the service accounts) that may use the
registry; a token of an allowed service account becomes the identity
`<namespace>:<serviceaccount>` in the group `ns:<namespace>`.

The JavaScript policy in `../kubernetes-js/` is the same policy line for
line, and `../kubernetes-cel/settings.toml` the same rules in CEL: the tests
run all three over `../fixtures/kubernetes.toml` and require identical
decisions. Change them together.
"""

import json
import re

import wit_world
from wit_world.imports import host
from wit_world.imports.types import Decision_Allow, Decision_Deny, Identity
from componentize_py_types import Err

# A namespace is an RFC 1123 label; a service account name an RFC 1123
# subdomain. Checked on the settings only: a token's names are compared with
# them, so a malformed name in a token can only ever be "not allowed".
# (`fullmatch`, not `$`: Python's `$` also matches before a final newline.)
NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
SERVICE_ACCOUNT = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")

NOT_A_TOKEN = "not a Kubernetes service-account token: "
SETTINGS_FIELDS = ("allowed_namespaces", "allowed_service_accounts")


class Refused(Exception):
    """A deny, with its reason."""


def json_type(value):
    """The JSON name of a value's type, as the JavaScript policy spells it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def quote(text):
    """`text` as a JSON string: quoted, control characters escaped (a deny
    reason is logged), the same as the JavaScript policy's `JSON.stringify`."""
    return json.dumps(text, ensure_ascii=False)


def string_list(settings, field):
    value = settings[field]
    if not isinstance(value, list):
        raise ValueError(f"settings.{field}: must be a list of strings, got {json_type(value)}")
    if not value:
        raise ValueError(f"settings.{field}: must not be empty")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ValueError(f"settings.{field}[{i}]: must be a string, got {json_type(item)}")
    return value


def parse_settings(text):
    """Reads the settings document; a ValueError names the offending field."""
    try:
        settings = json.loads(text) if text.strip() else {}
    except ValueError as e:
        raise ValueError(f"settings: not valid JSON: {e}") from None
    if not isinstance(settings, dict):
        raise ValueError(f"settings: must be an object, got {json_type(settings)}")
    for key in settings:
        if key not in SETTINGS_FIELDS:
            raise ValueError(
                f"settings: unknown field {quote(key)} (expected allowed_namespaces, allowed_service_accounts)"
            )
    if "allowed_namespaces" not in settings:
        raise ValueError("settings.allowed_namespaces: required (the namespaces whose service accounts are allowed)")

    namespaces = string_list(settings, "allowed_namespaces")
    for i, ns in enumerate(namespaces):
        if not NAMESPACE.fullmatch(ns):
            raise ValueError(
                f"settings.allowed_namespaces[{i}]: {quote(ns)} is not a Kubernetes namespace name"
                " (lowercase letters, digits and '-', at most 63 characters)"
            )

    service_accounts = None
    if "allowed_service_accounts" in settings:
        service_accounts = string_list(settings, "allowed_service_accounts")
        for i, entry in enumerate(service_accounts):
            field = f"settings.allowed_service_accounts[{i}]"
            parts = entry.split(":")
            if len(parts) != 2:
                raise ValueError(f'{field}: {quote(entry)} is not "<namespace>:<name>"')
            ns, name = parts
            if not NAMESPACE.fullmatch(ns):
                raise ValueError(f"{field}: {quote(ns)} is not a Kubernetes namespace name")
            if len(name) > 253 or not SERVICE_ACCOUNT.fullmatch(name):
                raise ValueError(f"{field}: {quote(name)} is not a Kubernetes service account name")
            if ns not in namespaces:
                raise ValueError(
                    f"{field}: namespace {quote(ns)} is not in allowed_namespaces, so {quote(entry)} could never be allowed"
                )
    return frozenset(namespaces), None if service_accounts is None else frozenset(service_accounts)


def member(parent, path, key, kind):
    """`parent[key]`, required to be of JSON type `kind` ("object" or a
    non-empty "string"); `path` is the claim's name in deny reasons."""
    if key not in parent:
        raise Refused(f"{NOT_A_TOKEN}missing {path}")
    value = parent[key]
    if kind == "object":
        if not isinstance(value, dict):
            raise Refused(f"{NOT_A_TOKEN}{path} must be an object, got {json_type(value)}")
    else:
        if not isinstance(value, str):
            raise Refused(f"{NOT_A_TOKEN}{path} must be a string, got {json_type(value)}")
        if value == "":
            raise Refused(f"{NOT_A_TOKEN}{path} is empty")
    return value


def decide(claims, namespaces, service_accounts):
    """Who the bearer of `claims` is, as (username, groups); raises Refused."""
    if not isinstance(claims, dict):
        raise Refused(f"claims must be an object, got {json_type(claims)}")
    k8s = member(claims, "kubernetes.io", "kubernetes.io", "object")
    ns = member(k8s, "kubernetes.io.namespace", "namespace", "string")
    sa = member(k8s, "kubernetes.io.serviceaccount", "serviceaccount", "object")
    name = member(sa, "kubernetes.io.serviceaccount.name", "name", "string")
    sub = member(claims, "sub", "sub", "string")

    expected = f"system:serviceaccount:{ns}:{name}"
    if sub != expected:
        raise Refused(f"sub does not match kubernetes.io: {quote(sub)} is not {quote(expected)}")
    if ns not in namespaces:
        raise Refused(f"namespace {quote(ns)} is not allowed")
    account = f"{ns}:{name}"
    if service_accounts is not None and account not in service_accounts:
        raise Refused(f"service account {quote(account)} is not allowed")
    return account, [f"ns:{ns}"]


class WitWorld(wit_world.WitWorld):
    settings = None

    def init(self, settings: str) -> None:
        try:
            WitWorld.settings = parse_settings(settings)
        except ValueError as e:
            raise Err(str(e))
        namespaces, service_accounts = WitWorld.settings
        host.log(
            host.Level.INFO,
            f"kubernetes policy: {len(namespaces)} namespace(s), "
            + ("any service account" if service_accounts is None else f"{len(service_accounts)} service account(s)"),
        )

    def evaluate(self, claims: str) -> wit_world.imports.types.Decision:
        if WitWorld.settings is None:
            return Decision_Deny("policy not initialised")
        try:
            parsed = json.loads(claims)
        except ValueError as e:
            return Decision_Deny(f"claims are not valid JSON: {e}")
        try:
            username, groups = decide(parsed, *WitWorld.settings)
        except Refused as refused:
            return Decision_Deny(str(refused))
        return Decision_Allow(Identity(username=username, groups=groups))
