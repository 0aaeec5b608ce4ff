// Sign-in: OpenID Connect's authorization-code flow with PKCE (RFC 6749 section 4.1,
// RFC 7636 with S256), as a public client. The verifier, state and nonce live in
// sessionStorage for the round trip to the identity provider and are removed on return.

import { base64url, fromBase64url } from "./devicecode.js";

const PENDING = "idcode-wallet-sign-in";

export function redirectUri() {
  return new URL("./", location.href).href.split("?")[0];
}

async function challengeOf(verifier) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

const random = (bytes) => base64url(crypto.getRandomValues(new Uint8Array(bytes)));

// Go to the identity provider; `after` is what the wallet does once back (e.g. "devices").
export async function startSignIn(config, after) {
  const verifier = random(32); // 43 characters, 256 bits
  const state = random(16);
  const nonce = random(16);
  sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, nonce, after }));
  const url = new URL(config.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: config.client_id,
    redirect_uri: redirectUri(),
    scope: config.scope || "openid",
    state,
    nonce,
    code_challenge: await challengeOf(verifier),
    code_challenge_method: "S256",
  }).toString();
  location.assign(url.href);
}

export class SignInError extends Error {}

// Whether this page load is the identity provider's answer.
export function isSignInAnswer() {
  const params = new URLSearchParams(location.search);
  return params.has("code") || params.has("error");
}

// Finish a sign-in: check the state, redeem the code with the verifier, check the ID token's
// nonce, audience and lifetime. Returns {idToken, expiresAt, after}. The code leaves the
// address bar (and the history) first, whatever happens next.
export async function finishSignIn(config) {
  const params = new URLSearchParams(location.search);
  history.replaceState(null, "", redirectUri());
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  if (pending === null || params.get("state") !== pending.state) {
    throw new SignInError("This sign-in answer was not asked for by this page; sign in again.");
  }
  if (params.has("error")) {
    const description = params.get("error_description");
    throw new SignInError(
      params.get("error") === "access_denied"
        ? "Sign-in was cancelled."
        : `Sign-in failed: ${params.get("error")}${description ? ` (${description})` : ""}.`,
    );
  }
  const response = await fetch(config.token_endpoint, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: params.get("code"),
      redirect_uri: redirectUri(),
      client_id: config.client_id,
      code_verifier: pending.verifier,
    }),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok || typeof answer.id_token !== "string") {
    throw new SignInError(
      `The identity provider refused the sign-in: ${answer.error || response.status}` +
        (answer.error_description ? ` (${answer.error_description})` : "") + ".",
    );
  }
  // From the token endpoint itself, over the page's own connection: the signature is the
  // service's to check (OpenID Connect Core 3.1.3.7 allows the client to rely on TLS here).
  const claims = idTokenClaims(answer.id_token);
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (claims.nonce !== pending.nonce) throw new SignInError("The ID token's nonce is not this sign-in's.");
  if (!audiences.includes(config.client_id)) throw new SignInError("The ID token is not for this wallet.");
  if (typeof claims.exp !== "number") throw new SignInError("The ID token has no expiry.");
  return { idToken: answer.id_token, expiresAt: claims.exp, after: pending.after };
}

export function idTokenClaims(token) {
  const parts = token.split(".");
  if (parts.length !== 3) throw new SignInError("The ID token is not a JWT.");
  return JSON.parse(new TextDecoder().decode(fromBase64url(parts[1])));
}
