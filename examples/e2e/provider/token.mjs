#!/usr/bin/env node
// Fetches a client_credentials access token from the e2e provider (or any
// OpenID provider accepting client_secret_post) and prints it on stdout.
//
//   node token.mjs ISSUER CLIENT_ID CLIENT_SECRET [RESOURCE]
//
// RESOURCE defaults to https://gantry.example. The token endpoint is taken
// from the issuer's discovery document. The same with curl and jq:
//
//   curl -s -d grant_type=client_credentials -d client_id=ID -d client_secret=SECRET \
//        -d resource=https://gantry.example ISSUER/token | jq -r .access_token

const [issuer, clientId, clientSecret, resource = 'https://gantry.example'] = process.argv.slice(2);
if (!issuer || !clientId || !clientSecret) {
  process.stderr.write('usage: node token.mjs ISSUER CLIENT_ID CLIENT_SECRET [RESOURCE]\n');
  process.exit(2);
}

async function main() {
  const discovery = await fetch(`${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`);
  if (!discovery.ok) throw new Error(`discovery answered ${discovery.status}`);
  const { token_endpoint: tokenEndpoint } = await discovery.json();
  const response = await fetch(tokenEndpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'client_credentials',
      client_id: clientId,
      client_secret: clientSecret,
      resource,
    }),
  });
  const body = await response.json();
  if (!response.ok || typeof body.access_token !== 'string') {
    throw new Error(`token endpoint answered ${response.status}: ${body.error ?? ''} ${body.error_description ?? ''}`);
  }
  process.stdout.write(`${body.access_token}\n`);
}

main().catch((e) => {
  process.stderr.write(`token: ${e.message}\n`);
  process.exit(1);
});
