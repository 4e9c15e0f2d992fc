// Interop: the openid-client npm package (panva) against a real rampart
// server. Run by e2e/oidc_client_test.go, which starts the server, registers
// the clients and users below, and passes everything in the environment.
// Prints one "ok <step>" line per check; exits 1 at the first failure.
//
// Covers: discovery, authorization code + PKCE + nonce with DPoP (public
// client) and the server's DPoP nonce (use_dpop_nonce), ID token validation, userinfo with DPoP, refresh rotation and
// reuse refused, client credentials (client_secret_basic, and with DPoP),
// introspection and revocation, private_key_jwt, tls_client_auth with an
// SVID, and token exchange (RFC 8693) by a service.
import * as client from 'openid-client'
import { Agent, fetch as undiciFetch } from 'undici'
import { createPrivateKey, webcrypto } from 'node:crypto'
import { readFileSync } from 'node:fs'

const env = (k) => {
  const v = process.env[k]
  if (!v) throw new Error(`missing ${k}`)
  return v
}
const issuer = new URL(env('ISSUER'))
const redirect = env('REDIRECT_URI')

function ok(step) { console.log(`ok ${step}`) }
function check(cond, step, detail) {
  if (!cond) throw new Error(`${step}: ${detail ?? 'check failed'}`)
  ok(step)
}
function payload(jwt) { return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url')) }
async function rejects(p, step, want) {
  try { await p } catch (e) {
    const msg = `${e.code ?? ''} ${e.error ?? ''} ${e.message}`
    if (want && !msg.includes(want)) throw new Error(`${step}: refused, but not for ${want}: ${msg}`)
    return ok(step)
  }
  throw new Error(`${step}: accepted`)
}

// A user logs in on the login page: fetch the form, post the credentials
// with its hidden fields and cookies, return the redirect to the client.
async function login(authUrl, user, password) {
  const page = await fetch(authUrl, { redirect: 'manual' })
  const html = await page.text()
  if (page.status !== 200 || !html.includes('name="password"')) throw new Error(`login page: ${page.status}`)
  const cookies = page.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ')
  const form = new URLSearchParams({ username: user, password, action: 'allow' })
  for (const m of html.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)) {
    form.set(m[1], m[2].replaceAll('&#43;', '+').replaceAll('&amp;', '&'))
  }
  const resp = await fetch(new URL('/oauth2/authorize', issuer), {
    method: 'POST', redirect: 'manual', body: form,
    headers: { cookie: cookies, 'content-type': 'application/x-www-form-urlencoded' },
  })
  if (resp.status !== 303) throw new Error(`login: ${resp.status} ${await resp.text()}`)
  return new URL(resp.headers.get('location'))
}

// 1. Discovery, as a public client.
const spa = await client.discovery(issuer, 'spa', { id_token_signed_response_alg: 'ES256' }, client.None())
const meta = spa.serverMetadata()
check(meta.issuer === issuer.href.replace(/\/$/, ''), 'discovery issuer')
check(meta.code_challenge_methods_supported?.includes('S256') && meta.dpop_signing_alg_values_supported?.includes('ES256'), 'discovery PKCE and DPoP metadata')

// 2. Authorization code + PKCE + nonce, tokens bound to a DPoP key. The
// server asks for its DPoP nonce (use_dpop_nonce); openid-client signs
// the proof again with it. A spy on the client's requests checks that.
const seen = []
spa[client.customFetch] = async (url, options) => {
  const resp = await fetch(url, options)
  const proof = options.headers?.get?.('dpop') ?? options.headers?.dpop
  seen.push({ url: String(url), status: resp.status, nonce: proof ? payload(proof).nonce : undefined, issued: resp.headers.get('dpop-nonce') })
  return resp
}
const dpopKeys = await client.randomDPoPKeyPair('ES256')
const DPoP = client.getDPoPHandle(spa, dpopKeys)
const verifier = client.randomPKCECodeVerifier()
const state = client.randomState()
const nonce = client.randomNonce()
const authUrl = client.buildAuthorizationUrl(spa, {
  redirect_uri: redirect, scope: 'openid profile email offline_access', state, nonce,
  code_challenge: await client.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
})
const callback = await login(authUrl, 'alice', env('ALICE_PASSWORD'))
const tokens = await client.authorizationCodeGrant(spa, callback,
  { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce, idTokenExpected: true },
  undefined, { DPoP })
check(tokens.token_type.toLowerCase() === 'dpop', 'code grant issues a DPoP token', tokens.token_type)
const tokenCalls = seen.filter((c) => c.url.endsWith('/oauth2/token'))
check(tokenCalls.length === 2 && tokenCalls[0].status === 400 && !tokenCalls[0].nonce && tokenCalls[0].issued &&
  tokenCalls[1].status === 200 && tokenCalls[1].nonce === tokenCalls[0].issued,
  'DPoP nonce: first proof answered use_dpop_nonce, the retry with the server nonce accepted', JSON.stringify(tokenCalls))
const idc = tokens.claims()
check(idc.sub === 'alice' && idc.nonce === nonce && idc.iss === meta.issuer, 'ID token validated (signature, iss, aud, nonce)')
check(payload(tokens.access_token).cnf?.jkt, 'access token carries cnf.jkt')
const info = await client.fetchUserInfo(spa, tokens.access_token, 'alice', { DPoP })
check(info.sub === 'alice' && info.email === 'alice@example.org', 'userinfo with a DPoP proof')
// Without the proof, the bound token is refused.
await rejects(client.fetchUserInfo(spa, tokens.access_token, 'alice'), 'userinfo refuses the DPoP-bound token as a bearer token')

// 3. Refresh rotation; the old refresh token is then refused.
const refreshed = await client.refreshTokenGrant(spa, tokens.refresh_token, undefined, { DPoP })
check(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token, 'refresh rotates the refresh token')
await rejects(client.refreshTokenGrant(spa, tokens.refresh_token, undefined, { DPoP }), 'reused refresh token refused', 'invalid_grant')
await rejects(client.refreshTokenGrant(spa, refreshed.refresh_token, undefined, { DPoP }), 'its family is revoked after the reuse', 'invalid_grant')

// 4. Client credentials with a secret; introspection; revocation.
const backend = await client.discovery(issuer, 'backend', undefined, client.ClientSecretBasic(env('BACKEND_SECRET')))
const cc = await client.clientCredentialsGrant(backend)
check(cc.token_type.toLowerCase() === 'bearer' && cc.access_token, 'client credentials (client_secret_basic)')
let intro = await client.tokenIntrospection(backend, cc.access_token)
check(intro.active === true && intro.client_id === 'backend', 'introspection: active')
await client.tokenRevocation(backend, cc.access_token)
intro = await client.tokenIntrospection(backend, cc.access_token)
check(intro.active === false, 'introspection after revocation: inactive')
const ccDPoP = await client.clientCredentialsGrant(backend, undefined, { DPoP: client.getDPoPHandle(backend, await client.randomDPoPKeyPair('EdDSA')) })
check(ccDPoP.token_type.toLowerCase() === 'dpop' && payload(ccDPoP.access_token).cnf?.jkt, 'client credentials with DPoP (EdDSA proof key)')

// 5. private_key_jwt.
const pem = readFileSync(env('JWT_CLIENT_KEY'))
const der = createPrivateKey(pem).export({ format: 'der', type: 'pkcs8' })
const jwtKey = await webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign'])
const jwtClient = await client.discovery(issuer, 'reports', undefined, client.PrivateKeyJwt({ key: jwtKey, kid: 'reports-1' }))
const pj = await client.clientCredentialsGrant(jwtClient)
check(payload(pj.access_token).client_id === 'reports', 'client credentials (private_key_jwt)')

// 6. tls_client_auth with the service's SVID, and token exchange: orders
// exchanges alice's token (addressed to it) for one for payments.
const agent = new Agent({ connect: { cert: readFileSync(env('SVID_CERT')), key: readFileSync(env('SVID_KEY')), ca: readFileSync(env('CA_BUNDLE')) } })
const mtls = (url, options) => undiciFetch(url, { ...options, dispatcher: agent })
const orders = await client.discovery(issuer, 'orders', { use_mtls_endpoint_aliases: false }, client.TlsClientAuth(), { [client.customFetch]: mtls })
orders[client.customFetch] = mtls
// A DPoP-bound token is exchanged only with a proof by its key, which
// orders does not hold: refused (a stolen bound token must not turn into a
// bearer one through an exchange). A bearer token of alice's is exchanged.
const fresh = await client.refreshTokenGrant(spa, (await freshLogin()).refresh_token, undefined, { DPoP })
await rejects(client.genericGrantRequest(orders, 'urn:ietf:params:oauth:grant-type:token-exchange', {
  subject_token: fresh.access_token, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token', audience: 'spiffe://example.org/payments',
}), 'token exchange of a DPoP-bound token without its key refused', 'invalid_grant')
const bearer = await freshLogin(false)
const exchanged = await client.genericGrantRequest(orders, 'urn:ietf:params:oauth:grant-type:token-exchange', {
  subject_token: bearer.access_token,
  subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
  audience: 'spiffe://example.org/payments',
})
const xc = payload(exchanged.access_token)
check(xc.sub === 'alice' && xc.aud === 'spiffe://example.org/payments' || (Array.isArray(xc.aud) && xc.aud.includes('spiffe://example.org/payments')), 'token exchange: alice, for payments')
check(xc.act?.sub === 'spiffe://example.org/orders', 'token exchange: act names orders', JSON.stringify(xc.act))
check(xc.cnf?.['x5t#S256'], 'token exchange over tls_client_auth: bound to the SVID')
await rejects(client.genericGrantRequest(orders, 'urn:ietf:params:oauth:grant-type:token-exchange', {
  subject_token: cc.access_token, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token', audience: 'spiffe://example.org/payments',
}), 'token exchange of a token not addressed to orders refused', 'invalid_grant')

async function freshLogin(bound = true) {
  const v = client.randomPKCECodeVerifier()
  const s = client.randomState()
  const u = client.buildAuthorizationUrl(spa, { redirect_uri: redirect, scope: 'openid offline_access', state: s,
    code_challenge: await client.calculatePKCECodeChallenge(v), code_challenge_method: 'S256' })
  return client.authorizationCodeGrant(spa, await login(u, 'alice', env('ALICE_PASSWORD')), { pkceCodeVerifier: v, expectedState: s }, undefined, bound ? { DPoP } : undefined)
}

console.log('all openid-client checks passed')
