// Gantry claim policy for Kubernetes projected service-account tokens.
//
// Implements the `claim-policy` world of `wit/gantry-policy@0.1.0/policy.wit`. The settings name
// the namespaces (and optionally the service accounts) that may use the
// registry; a token of an allowed service account becomes the identity
// `<namespace>:<serviceaccount>` in the group `ns:<namespace>`.
//
// The Python policy in `../kubernetes-python/app.py` is the same policy line
// for line, and `../kubernetes-cel/settings.toml` the same rules in CEL: the
// tests run all three over `../fixtures/kubernetes.toml` and require
// identical decisions. Change them together.

import { log } from 'gantry:policy/host@0.1.0';

// A namespace is an RFC 1123 label; a service account name an RFC 1123
// subdomain. Checked on the settings only: a token's names are compared with
// them, so a malformed name in a token can only ever be "not allowed".
const NAMESPACE = /^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$/;
const SERVICE_ACCOUNT = /^[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?$/;

const NOT_A_TOKEN = 'not a Kubernetes service-account token: ';
const SETTINGS_FIELDS = ['allowed_namespaces', 'allowed_service_accounts'];

/** A deny, with its reason. */
class Refused extends Error {}

/** A settings problem, naming the field. */
class BadSettings extends Error {}

/** The JSON name of a value's type, as the Python policy spells it. */
function jsonType(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'list';
  switch (typeof value) {
    case 'boolean':
    case 'number':
    case 'string':
      return typeof value;
    default:
      return 'object';
  }
}

const isObject = (value) => jsonType(value) === 'object';
const has = (object, key) => Object.prototype.hasOwnProperty.call(object, key);
// `text` as a JSON string: quoted, control characters escaped (a deny reason
// is logged), the same as the Python policy's `json.dumps`.
const quote = (text) => JSON.stringify(text);

function stringList(settings, field) {
  const value = settings[field];
  if (!Array.isArray(value)) {
    throw new BadSettings(`settings.${field}: must be a list of strings, got ${jsonType(value)}`);
  }
  if (value.length === 0) {
    throw new BadSettings(`settings.${field}: must not be empty`);
  }
  value.forEach((item, i) => {
    if (typeof item !== 'string') {
      throw new BadSettings(`settings.${field}[${i}]: must be a string, got ${jsonType(item)}`);
    }
  });
  return value;
}

/** Reads the settings document; a BadSettings names the offending field. */
function parseSettings(text) {
  let settings;
  try {
    settings = text.trim() === '' ? {} : JSON.parse(text);
  } catch (e) {
    throw new BadSettings(`settings: not valid JSON: ${e.message}`);
  }
  if (!isObject(settings)) {
    throw new BadSettings(`settings: must be an object, got ${jsonType(settings)}`);
  }
  for (const key of Object.keys(settings)) {
    if (!SETTINGS_FIELDS.includes(key)) {
      throw new BadSettings(
        `settings: unknown field ${quote(key)} (expected allowed_namespaces, allowed_service_accounts)`,
      );
    }
  }
  if (!has(settings, 'allowed_namespaces')) {
    throw new BadSettings(
      'settings.allowed_namespaces: required (the namespaces whose service accounts are allowed)',
    );
  }

  const namespaces = stringList(settings, 'allowed_namespaces');
  namespaces.forEach((ns, i) => {
    if (!NAMESPACE.test(ns)) {
      throw new BadSettings(
        `settings.allowed_namespaces[${i}]: ${quote(ns)} is not a Kubernetes namespace name` +
          " (lowercase letters, digits and '-', at most 63 characters)",
      );
    }
  });

  let serviceAccounts = null;
  if (has(settings, 'allowed_service_accounts')) {
    serviceAccounts = stringList(settings, 'allowed_service_accounts');
    serviceAccounts.forEach((entry, i) => {
      const field = `settings.allowed_service_accounts[${i}]`;
      const parts = entry.split(':');
      if (parts.length !== 2) {
        throw new BadSettings(`${field}: ${quote(entry)} is not "<namespace>:<name>"`);
      }
      const [ns, name] = parts;
      if (!NAMESPACE.test(ns)) {
        throw new BadSettings(`${field}: ${quote(ns)} is not a Kubernetes namespace name`);
      }
      if (name.length > 253 || !SERVICE_ACCOUNT.test(name)) {
        throw new BadSettings(`${field}: ${quote(name)} is not a Kubernetes service account name`);
      }
      if (!namespaces.includes(ns)) {
        throw new BadSettings(
          `${field}: namespace ${quote(ns)} is not in allowed_namespaces, so ${quote(entry)} could never be allowed`,
        );
      }
    });
  }
  return {
    namespaces: new Set(namespaces),
    serviceAccounts: serviceAccounts === null ? null : new Set(serviceAccounts),
  };
}

/**
 * `parent[key]`, required to be of JSON type `kind` ("object" or a non-empty
 * "string"); `path` is the claim's name in deny reasons.
 */
function member(parent, path, key, kind) {
  if (!has(parent, key)) {
    throw new Refused(`${NOT_A_TOKEN}missing ${path}`);
  }
  const value = parent[key];
  if (kind === 'object') {
    if (!isObject(value)) {
      throw new Refused(`${NOT_A_TOKEN}${path} must be an object, got ${jsonType(value)}`);
    }
  } else {
    if (typeof value !== 'string') {
      throw new Refused(`${NOT_A_TOKEN}${path} must be a string, got ${jsonType(value)}`);
    }
    if (value === '') {
      throw new Refused(`${NOT_A_TOKEN}${path} is empty`);
    }
  }
  return value;
}

/** Who the bearer of `claims` is; throws Refused. */
function decide(claims, { namespaces, serviceAccounts }) {
  if (!isObject(claims)) {
    throw new Refused(`claims must be an object, got ${jsonType(claims)}`);
  }
  const k8s = member(claims, 'kubernetes.io', 'kubernetes.io', 'object');
  const ns = member(k8s, 'kubernetes.io.namespace', 'namespace', 'string');
  const sa = member(k8s, 'kubernetes.io.serviceaccount', 'serviceaccount', 'object');
  const name = member(sa, 'kubernetes.io.serviceaccount.name', 'name', 'string');
  const sub = member(claims, 'sub', 'sub', 'string');

  const expected = `system:serviceaccount:${ns}:${name}`;
  if (sub !== expected) {
    throw new Refused(`sub does not match kubernetes.io: ${quote(sub)} is not ${quote(expected)}`);
  }
  if (!namespaces.has(ns)) {
    throw new Refused(`namespace ${quote(ns)} is not allowed`);
  }
  const account = `${ns}:${name}`;
  if (serviceAccounts !== null && !serviceAccounts.has(account)) {
    throw new Refused(`service account ${quote(account)} is not allowed`);
  }
  return { username: account, groups: [`ns:${ns}`] };
}

let current = null;

/** `init: func(settings: string) -> result<_, string>`: a throw is the error. */
export function init(settings) {
  try {
    current = parseSettings(settings);
  } catch (e) {
    // The thrown value is the `err` payload: a string, not an Error.
    throw e instanceof BadSettings ? e.message : `settings: ${e}`;
  }
  log(
    'info',
    `kubernetes policy: ${current.namespaces.size} namespace(s), ` +
      (current.serviceAccounts === null
        ? 'any service account'
        : `${current.serviceAccounts.size} service account(s)`),
  );
}

/** `evaluate: func(claims: string) -> decision`. */
export function evaluate(claims) {
  if (current === null) {
    return { tag: 'deny', val: 'policy not initialised' };
  }
  let parsed;
  try {
    parsed = JSON.parse(claims);
  } catch (e) {
    return { tag: 'deny', val: `claims are not valid JSON: ${e.message}` };
  }
  try {
    return { tag: 'allow', val: decide(parsed, current) };
  } catch (e) {
    if (e instanceof Refused) {
      return { tag: 'deny', val: e.message };
    }
    throw e;
  }
}
