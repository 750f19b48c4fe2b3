#!/usr/bin/env node
// A real OpenID provider for Gantry's end-to-end test and demo.
//
// npm `oidc-provider` issuing OAuth 2.0 client_credentials access tokens as
// RS256 JWTs (`typ: at+jwt`) shaped like Kubernetes service-account tokens:
// `sub` is the client id (name a client `system:serviceaccount:NS:SA`), `aud`
// is the requested resource indicator (an absolute URI such as
// `https://gantry.example`), and a `kubernetes.io` claim carries the
// namespace, service account and a pod. The signing key is generated at
// start and never written anywhere; discovery and JWKS are served at the
// usual places under the issuer.
//
//   node provider.mjs [--port N] [--host 127.0.0.1] [--clients FILE]
//                     [--client ID=SECRET]... [--audience URI]... [--ttl SECONDS]
//
// Environment equivalents: PROVIDER_PORT, PROVIDER_HOST, PROVIDER_CLIENTS,
// PROVIDER_TTL. Port 0 (the default) takes a free port. Prints
// `ready <issuer>` on stdout once it accepts connections.
//
// FILE is JSON: `[{"client_id": "...", "client_secret": "..."}, ...]` or
// `{"clients": [...]}`. Without `--audience`, any absolute URI may be
// requested as the resource (Gantry must then refuse the wrong ones); a token
// request without `resource` gets the first `--audience`, or
// `https://gantry.example`.

import { createHash, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const DEFAULT_AUDIENCE = 'https://gantry.example';

function fail(message) {
  process.stderr.write(`provider: ${message}\n`);
  process.exit(2);
}

function parseCommandLine() {
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        port: { type: 'string', default: process.env.PROVIDER_PORT ?? '0' },
        host: { type: 'string', default: process.env.PROVIDER_HOST ?? '127.0.0.1' },
        clients: { type: 'string', default: process.env.PROVIDER_CLIENTS },
        client: { type: 'string', multiple: true, default: [] },
        audience: { type: 'string', multiple: true, default: [] },
        ttl: { type: 'string', default: process.env.PROVIDER_TTL ?? '600' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    fail(e.message);
  }
  const { values } = parsed;
  if (values.help) {
    process.stdout.write(
      'usage: node provider.mjs [--port N] [--host ADDR] [--clients FILE] '
        + '[--client ID=SECRET]... [--audience URI]... [--ttl SECONDS]\n',
    );
    process.exit(0);
  }

  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad port ${values.port}`);
  const ttl = Number(values.ttl);
  if (!Number.isInteger(ttl) || ttl < 1) fail(`bad ttl ${values.ttl}`);

  const clients = [];
  if (values.clients) {
    let doc;
    try {
      doc = JSON.parse(readFileSync(values.clients, 'utf8'));
    } catch (e) {
      fail(`cannot read clients file ${values.clients}: ${e.message}`);
    }
    const list = Array.isArray(doc) ? doc : doc?.clients;
    if (!Array.isArray(list)) fail(`${values.clients}: expected a list of clients`);
    for (const c of list) {
      if (typeof c?.client_id !== 'string' || typeof c?.client_secret !== 'string') {
        fail(`${values.clients}: every client needs a string client_id and client_secret`);
      }
      clients.push({ id: c.client_id, secret: c.client_secret });
    }
  }
  for (const spec of values.client) {
    // Client ids contain colons (system:serviceaccount:NS:SA): split at the last '='.
    const at = spec.lastIndexOf('=');
    if (at <= 0 || at === spec.length - 1) fail(`--client wants ID=SECRET, got ${spec}`);
    clients.push({ id: spec.slice(0, at), secret: spec.slice(at + 1) });
  }
  if (clients.length === 0) fail('no clients: give --clients FILE or --client ID=SECRET');
  const ids = new Set();
  for (const c of clients) {
    if (ids.has(c.id)) fail(`client ${c.id} is given twice`);
    ids.add(c.id);
  }

  for (const a of values.audience) {
    if (!URL.canParse(a)) fail(`--audience must be an absolute URI, got ${a}`);
  }

  return {
    port,
    host: values.host,
    clients,
    audiences: values.audience,
    ttl,
  };
}

// ---------------------------------------------------------------- Kubernetes-shaped claims

/** A UUID-shaped string derived from `text`: stable for one service account. */
function stableUuid(text) {
  const h = createHash('sha256').update(text).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const pods = new Map();

/** The `kubernetes.io` claim for a client id `system:serviceaccount:NS:SA`, else undefined. */
function kubernetesClaims(clientId) {
  const m = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(clientId ?? '');
  if (!m) return undefined;
  const [, namespace, name] = m;
  // One "pod" per service account for the life of this process.
  if (!pods.has(clientId)) {
    pods.set(clientId, { name: `${name}-${randomBytes(3).toString('hex').slice(0, 5)}`, uid: randomUUID() });
  }
  return {
    namespace,
    serviceaccount: { name, uid: stableUuid(`${namespace}/${name}`) },
    pod: { ...pods.get(clientId) },
  };
}

// ---------------------------------------------------------------- the provider

const options = parseCommandLine();

// The RS256 signing key: generated now, kept only in memory.
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = {
  ...privateKey.export({ format: 'jwk' }),
  kid: `rs256-${randomBytes(6).toString('hex')}`,
  alg: 'RS256',
  use: 'sig',
};

const server = createServer();
server.on('error', (e) => fail(`cannot listen on ${options.host}:${options.port}: ${e.message}`));
server.listen(options.port, options.host, () => {
  const { port } = server.address();
  const host = options.host.includes(':') ? `[${options.host}]` : options.host;
  const issuer = `http://${host}:${port}`;

  const provider = new Provider(issuer, {
    clients: options.clients.map((c) => ({
      client_id: c.id,
      client_secret: c.secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_post',
    })),
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? options.audiences[0] ?? DEFAULT_AUDIENCE,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          if (options.audiences.length > 0 && !options.audiences.includes(resource)) {
            throw new errors.InvalidTarget(`resource ${resource} is not served by this provider`);
          }
          return {
            scope: '',
            audience: resource,
            accessTokenTTL: options.ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims: async (_ctx, token) => {
      const k8s = kubernetesClaims(token.clientId);
      return k8s ? { 'kubernetes.io': k8s } : undefined;
    },
    ttl: {
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? options.ttl,
    },
  });

  provider.on('server_error', (_ctx, e) => process.stderr.write(`provider: server error: ${e?.stack ?? e}\n`));
  provider.on('grant.error', (ctx, e) => process.stderr.write(
    `provider: token request refused (client ${ctx.oidc?.client?.clientId ?? '?'}): ${e.error ?? ''} ${e.error_description ?? e.message}\n`,
  ));
  provider.on('grant.success', (ctx) => {
    const token = ctx.oidc.entities.ClientCredentials;
    if (token) {
      process.stderr.write(
        `provider: issued a token to ${token.clientId} for ${token.resourceServer?.identifier() ?? '?'}\n`,
      );
    }
  });

  server.on('request', provider.callback());
  process.stdout.write(`ready ${issuer}\n`);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
