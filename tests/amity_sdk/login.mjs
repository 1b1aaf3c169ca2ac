// Logs in to a running sessiongate with the official Amity TypeScript SDK
// (@amityco/ts-sdk, version pinned in package.json), then renews the access
// token once through the SDK's own renewal object.
//
// Environment:
//   SESSIONGATE_BASE_URL  required, e.g. http://127.0.0.1:8080 (no trailing path)
//   AMITY_API_KEY         required, sent by the SDK as the X-API-Key header
//   AMITY_USER_ID         required
//   AMITY_DISPLAY_NAME    optional
//   AMITY_AUTH_TOKEN      optional (secure-mode networks); also used for renewal
//   AMITY_SKIP_RENEWAL    optional, "1" = log in only
//   AMITY_TIMEOUT_MS      optional, overall bound (default 20000)
//
// stdout: exactly one JSON line.
//   success: {"ok":true,"userId":..,"accessToken":..,"issuedAt":..,"expiresAt":..,
//             "sessionState":"established","renewal":{"ok":true,"accessToken":..,..}}
//   failure: {"ok":false,"stage":"login"|"renewal"|"timeout"|"config","error":"..","code":<Amity code or null>}
// Exit status: 0 on success, 1 on any failure. SDK chatter goes to stderr.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

// Keep stdout for the single result line; the SDK may console.log.
console.log = console.info = console.warn = console.debug = (...a) => console.error(...a);

let finished = false;
const finish = (result) => {
  if (finished) return;
  finished = true;
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(result.ok ? 0 : 1));
};
const errInfo = (e) => ({
  error: e && e.message ? e.message : String(e),
  code: e && typeof e.code === 'number' ? e.code : null,
});

const env = process.env;
const timeoutMs = Number(env.AMITY_TIMEOUT_MS || 20000);
setTimeout(() => finish({ ok: false, stage: 'timeout', error: `timed out after ${timeoutMs} ms`, code: null }), timeoutMs).unref();

// renewal.renew() is fire-and-forget inside the SDK: a failed renewal surfaces
// as an unhandled rejection. Capture it instead of letting Node crash.
let renewalError = null;
process.on('unhandledRejection', (e) => { renewalError = e; });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const baseUrl = env.SESSIONGATE_BASE_URL;
  const apiKey = env.AMITY_API_KEY;
  const userId = env.AMITY_USER_ID;
  if (!baseUrl || !apiKey || !userId) {
    return finish({ ok: false, stage: 'config', error: 'SESSIONGATE_BASE_URL, AMITY_API_KEY and AMITY_USER_ID are required', code: null });
  }

  const { Client } = require('@amityco/ts-sdk');
  const client = Client.createClient(apiKey, 'sg', { apiEndpoint: { http: baseUrl }, rteEnabled: false });

  // Workaround for @amityco/ts-sdk >= 6.30 under Node: its axios response
  // interceptor builds `new Request(response.request.url, ...)` for its network
  // activity watcher, but with axios' Node http adapter `response.request` is an
  // http.ClientRequest, which has no `url`, so every successful response throws
  // "TypeError: Failed to parse URL from undefined". This wrapper only sets that
  // one property (to the URL the request was sent to) on the response object after
  // it has come back; the request, its headers/body and everything the SDK checks
  // in the response are untouched. It is a no-op when `url` is already present.
  const axios = createRequire(require.resolve('@amityco/ts-sdk'))('axios');
  const adapter = axios.getAdapter(client.http.defaults.adapter);
  client.http.defaults.adapter = async (config) => {
    const response = await adapter(config);
    if (response && response.request && response.request.url === undefined) {
      response.request.url = client.http.getUri(config);
    }
    return response;
  };

  let handlerCalled = false;
  const sessionHandler = {
    // Called by the SDK's expiry watcher (checks every 10 minutes, so never
    // within this script's bound); renew the same way the renewal below does.
    sessionWillRenewAccessToken(renewal) {
      handlerCalled = true;
      if (env.AMITY_AUTH_TOKEN) renewal.renewWithAuthToken(env.AMITY_AUTH_TOKEN);
      else renewal.renew();
    },
  };

  const params = { userId };
  if (env.AMITY_DISPLAY_NAME) params.displayName = env.AMITY_DISPLAY_NAME;
  if (env.AMITY_AUTH_TOKEN) params.authToken = env.AMITY_AUTH_TOKEN;

  try {
    const success = await Client.login(params, sessionHandler);
    if (success !== true) {
      return finish({ ok: false, stage: 'login', error: `login returned ${success} (sessionState ${client.sessionState})`, code: null });
    }
  } catch (e) {
    return finish({ ok: false, stage: 'login', ...errInfo(e) });
  }

  const first = client.token;
  const result = {
    ok: true,
    userId: client.userId,
    accessToken: first.accessToken,
    issuedAt: first.issuedAt,
    expiresAt: first.expiresAt,
    sessionState: client.sessionState,
    authorizationHeader: client.http.defaults.headers.common.Authorization,
  };
  if (env.AMITY_SKIP_RENEWAL === '1') return finish(result);

  // Renewal: Client.renewal() is the exact object the SDK hands to
  // sessionHandler.sessionWillRenewAccessToken; renew() re-posts to
  // /api/v5/sessions (X-API-Key + the current Bearer token) and swaps client.token.
  const renewal = Client.renewal();
  if (env.AMITY_AUTH_TOKEN) renewal.renewWithAuthToken(env.AMITY_AUTH_TOKEN);
  else renewal.renew();
  while (client.token === first && !renewalError) await sleep(10);
  if (renewalError) {
    return finish({ ...result, ok: false, stage: 'renewal', renewal: { ok: false, ...errInfo(renewalError) }, ...errInfo(renewalError) });
  }
  // setClientToken sets client.token just before moving the session back to "established".
  while (client.sessionState !== 'established') await sleep(10);
  const renewed = client.token;
  result.renewal = {
    ok: true,
    accessToken: renewed.accessToken,
    issuedAt: renewed.issuedAt,
    expiresAt: renewed.expiresAt,
    changed: renewed.accessToken !== first.accessToken,
    sessionState: client.sessionState,
    authorizationHeader: client.http.defaults.headers.common.Authorization,
    sessionHandlerCalled: handlerCalled,
  };
  return finish(result);
}

main().catch((e) => finish({ ok: false, stage: 'login', ...errInfo(e) }));
