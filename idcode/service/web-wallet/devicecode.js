// Device codes made on the phone (docs/code-format.md section 8), and the device's request
// tokens (docs/api.md, devices). Pure functions over bytes and a WebCrypto key: no DOM, no
// network, no clock (the caller passes `now`), so the page and the tests run the same code.
//
// WebCrypto's ECDSA P-256 signature is the raw r || s (IEEE P1363), 64 bytes, which is what
// both COSE (RFC 9053 section 2.1) and JWS ES256 (RFC 7518 section 3.4) want.

export const DEVICE_AUDIENCE = "idcode/device";
export const DEVICE_TOKEN_LIFETIME = 120; // seconds; the service allows at most 300
export const ISSUER_SIGNATURE_BYTES = 64;
export const CODE_ID_BYTES = 8;
export const KIND_P256 = 2;
const KIND_BYTES = { 1: 32, 2: 33 }; // device public key: Ed25519 raw, P-256 compressed
const CREDENTIAL_FIXED = 1 + 1 + 4 + 11; // kind, issuer kid, expires_at, card

// -- CBOR (RFC 8949), deterministic: shortest heads, definite lengths -----------------------

function head(major, value) {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError("a CBOR length or integer outside 0..2^32-1");
  }
  const m = major << 5;
  if (value < 24) return Uint8Array.of(m | value);
  if (value < 0x100) return Uint8Array.of(m | 24, value);
  if (value < 0x10000) return Uint8Array.of(m | 25, value >>> 8, value & 0xff);
  return Uint8Array.of(m | 26, value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff);
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export const cbor = {
  uint: (n) => head(0, n),
  bytes: (b) => concat(head(2, b.length), b),
  text: (s) => {
    const b = new TextEncoder().encode(s);
    return concat(head(3, b.length), b);
  },
  array: (items) => concat(head(4, items.length), ...items),
  emptyMap: () => Uint8Array.of(0xa0),
};

// -- base45 (RFC 9285) and base64url --------------------------------------------------------

const BASE45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

export function base45(bytes) {
  let out = "";
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    let n = bytes[i] * 256 + bytes[i + 1];
    const c = n % 45;
    n = (n - c) / 45;
    const d = n % 45;
    const e = (n - d) / 45;
    out += BASE45[c] + BASE45[d] + BASE45[e];
  }
  if (bytes.length % 2) {
    const n = bytes[bytes.length - 1];
    out += BASE45[n % 45] + BASE45[(n - (n % 45)) / 45];
  }
  return out;
}

export function base64url(bytes) {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

export function fromBase64url(text) {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
    throw new SyntaxError("not base64url");
  }
  const binary = atob(text.replaceAll("-", "+").replaceAll("_", "/"));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// -- the credential the service certified ---------------------------------------------------

// Reads the credential blob (credential bytes || 64-byte issuer signature) as far as the
// wallet needs it; the terminal checks it properly. Throws on a blob of the wrong shape.
export function readCredential(blob) {
  const kind = blob[0];
  const keyBytes = KIND_BYTES[kind];
  if (keyBytes === undefined) throw new Error(`unknown credential kind ${kind}`);
  const credentialBytes = CREDENTIAL_FIXED + keyBytes;
  if (blob.length !== credentialBytes + ISSUER_SIGNATURE_BYTES) {
    throw new Error(`a credential of kind ${kind} is ${credentialBytes + 64} bytes, not ${blob.length}`);
  }
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  return {
    kind,
    kid: String.fromCharCode(blob[1]),
    expiresAt: view.getUint32(2),
    card: blob.slice(6, 17),
    devicePublicKey: blob.slice(17, credentialBytes),
    credential: blob.slice(0, credentialBytes),
    issuerSignature: blob.slice(credentialBytes),
  };
}

// The compressed SEC1 point of a P-256 public key given as a JWK (what the credential holds).
export function compressedPoint(jwk) {
  const x = fromBase64url(jwk.x);
  const y = fromBase64url(jwk.y);
  return concat(Uint8Array.of(2 + (y[31] & 1)), x);
}

// -- device codes ---------------------------------------------------------------------------

// The device code's payload: [iat, cti, credential, issuer signature].
export function devicePayload(credential, now, codeId) {
  if (codeId.length !== CODE_ID_BYTES) throw new RangeError("a code id is 8 bytes");
  // Always 4 bytes on the wire (section 8): a time after 1970-01-01 18:12 UTC, before 2106.
  if (!Number.isInteger(now) || now < 0x10000 || now > 0xffffffff) {
    throw new RangeError("iat is a 32-bit time after 1970-01-01 18:12 UTC");
  }
  return cbor.array([
    cbor.uint(now),
    cbor.bytes(codeId),
    cbor.bytes(credential.credential),
    cbor.bytes(credential.issuerSignature),
  ]);
}

// What the device signs: the COSE Sig_structure ["Signature1", h'', h'', payload].
export function deviceSigStructure(payload) {
  const empty = new Uint8Array(0);
  return cbor.array([cbor.text("Signature1"), cbor.bytes(empty), cbor.bytes(empty), cbor.bytes(payload)]);
}

// A device code: prefix + base45(COSE_Sign1 [h'', {}, payload, signature]), untagged.
export async function makeDeviceCode({ privateKey, blob, prefix, now, codeId }) {
  const credential = readCredential(blob);
  if (credential.kind !== KIND_P256) throw new Error("this wallet signs with P-256 keys only");
  const id = codeId ?? crypto.getRandomValues(new Uint8Array(CODE_ID_BYTES));
  const payload = devicePayload(credential, now, id);
  const signature = new Uint8Array(
    await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, privateKey, deviceSigStructure(payload)),
  );
  const sign1 = cbor.array([cbor.bytes(new Uint8Array(0)), cbor.emptyMap(), cbor.bytes(payload), cbor.bytes(signature)]);
  return { code: prefix + base45(sign1), codeId: id, iat: now };
}

// -- the device's request tokens ------------------------------------------------------------

// A single-use JWT (ES256) signed by the device key, for the service's device routes:
// iss = sub = the device's id, aud = "idcode/device", iat, exp, jti.
export async function deviceToken({ privateKey, deviceUuid, now }) {
  const encode = (value) => base64url(new TextEncoder().encode(JSON.stringify(value)));
  const header = encode({ alg: "ES256", typ: "JWT" });
  const claims = encode({
    iss: deviceUuid,
    sub: deviceUuid,
    aud: DEVICE_AUDIENCE,
    iat: now,
    exp: now + DEVICE_TOKEN_LIFETIME,
    jti: base64url(crypto.getRandomValues(new Uint8Array(16))),
  });
  const signingInput = new TextEncoder().encode(`${header}.${claims}`);
  const signature = new Uint8Array(
    await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, privateKey, signingInput),
  );
  return `${header}.${claims}.${base64url(signature)}`;
}

// A new device key: ECDSA P-256, the private half not extractable (it never leaves WebCrypto,
// not even to this page's own scripts). The public half is always exportable.
export async function newDeviceKey() {
  return crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
}

export async function publicJwk(keyPair) {
  const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", keyPair.publicKey);
  return { kty, crv, x, y };
}
