// Test-only OpenID provider for Berth's OIDC tests, on the certified `oidc-provider` package.
//
//   node server.mjs CONFIG.json
//
// CONFIG: {
//   "host": "127.0.0.1", "port": 0,          // port 0 picks a free one
//   "audience": "berth",                       // the only resource tokens are issued for
//   "accessTokenTTL": 60,                      // seconds
//   "keysFile": "/tmp/x/keys.json",            // private JWKS, created if missing, kept across restarts
//   "clients": [{ "client_id": "team-a", "client_secret": "…", "claims": { "berth_tenant": ["team-a"] } }]
// }
//
// Serves plain HTTP on loopback. Client-credentials grant only; access tokens are RS256 JWTs
// whose `aud` is the `audience` form parameter (or `resource`), which must equal the configured
// audience; each client's `claims` are added to its tokens. Prints one JSON line
// {"issuer": …, "port": …} on stdout once it listens.
//
// Test hooks: POST /test/rotate-keys puts a new signing key first (the old ones stay published)
// and answers {"kid": …}; GET /test/stats answers {"tokens": <issued so far>}.
import { createServer } from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const host = config.host ?? '127.0.0.1';
const audience = config.audience ?? 'berth';
const ttl = config.accessTokenTTL ?? 60;
const clientsById = new Map(config.clients.map((c) => [c.client_id, c]));
let tokensIssued = 0;

function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

function saveKeys(keys) {
  if (!config.keysFile) return;
  const tmp = `${config.keysFile}.tmp`;
  writeFileSync(tmp, JSON.stringify({ keys }), { mode: 0o600 });
  renameSync(tmp, config.keysFile);
}

let keys;
if (config.keysFile && existsSync(config.keysFile)) {
  keys = JSON.parse(readFileSync(config.keysFile, 'utf8')).keys;
} else {
  keys = [newKey()];
  saveKeys(keys);
}

function makeProvider(issuer) {
  const provider = new Provider(issuer, {
    clients: config.clients.map((c) => ({
      client_id: c.client_id,
      client_secret: c.client_secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: c.token_endpoint_auth_method ?? 'client_secret_basic',
    })),
    jwks: { keys },
    scopes: ['openid', 'berth'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // The token endpoint does not parse extra parameters; the broker sends `audience`.
        defaultResource: (ctx) => ctx.oidc.body?.audience ?? undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          if (resource !== audience) {
            throw new errors.InvalidTarget(`unknown resource ${resource}`);
          }
          return {
            scope: 'berth',
            audience,
            accessTokenTTL: ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims: (ctx, token) => {
      tokensIssued += 1;
      return clientsById.get(token.clientId)?.claims ?? {};
    },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  return provider;
}

let current;
const server = createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/test/rotate-keys') {
    const key = newKey();
    keys = [key, ...keys];
    saveKeys(keys);
    current = makeProvider(issuer).callback();
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ kid: key.kid }));
    return;
  }
  if (req.method === 'GET' && req.url === '/test/stats') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ tokens: tokensIssued }));
    return;
  }
  current(req, res);
});

let issuer;
server.listen(config.port ?? 0, host, () => {
  const { port } = server.address();
  issuer = `http://${host}:${port}`;
  current = makeProvider(issuer).callback();
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
