// An idcode verifier written from the format description (docs/code-format.md) alone, checked
// against the committed test vectors: version 1 codes (section 2) and device codes, version 2
// (section 8). It shows that an integrator needs nothing from the Python code: base45, a
// strict CBOR decoder and the platform's Ed25519 / P-256 verification suffice. SM2 codes (the
// GM crypto profile, docs/crypto-profiles.md) are checked by the SM2 verification of GB/T
// 32918.2 written out below over BigInt, with node:crypto's SM3: node:crypto loads SM2 keys but
// verifies with OpenSSL 3's default, empty user id and has no option to set the GM/T 0009
// default id (1234567812345678) that idcode signs with.
//
//   node verify.mjs [VECTOR_DIR]      (default: ../test-vectors/cases)
import { createHash, createPublicKey, verify as verifySignature } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { inflateSync } from 'node:zlib'
import { decode, encode, rfc8949EncodeOptions } from 'cborg'

const MAX_CODE_LENGTH = 512 // refuse hostile scanner input before doing any work
const BASE45 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:'
// COSE alg id -> JOSE name; SM2 is idcode's, from COSE's private-use range (section 3).
const COSE_ALGS = new Map([[-8, 'EdDSA'], [-7, 'ES256'], [-65537, 'SM2']])
const COSE_ALG_IDS = new Map([['EdDSA', -8], ['ES256', -7], ['SM2', -65537]])
const CLAIM_KEYS = [4, 6, 7, -1] // exp, iat, cti, card: exactly these, nothing else
const MAX_NUMERIC_DATE = 2 ** 32 - 1
const EMPTY = new Uint8Array(0)

// Device codes (section 8): a device code lives 60 s from its iat; a credential at most 7 days,
// so an issuer key's credentials end within 7 days after its signing period.
const DEVICE_CODE_LIFETIME = 60
const MAX_CREDENTIAL_LIFETIME = 7 * 86400
// The credential's first byte: the device key's kind, which fixes its algorithm and size.
const DEVICE_KINDS = new Map([[1, { alg: 'EdDSA', keyLength: 32 }], [2, { alg: 'ES256', keyLength: 33 }]])
// DER SubjectPublicKeyInfo headers, so node:crypto loads the credential's raw key bytes: an
// Ed25519 key (RFC 8410), and a P-256 key as a compressed point (SEC 1 2.3.3), which OpenSSL
// decompresses, refusing an x with no point on the curve.
const SPKI_HEADERS = {
  EdDSA: Buffer.from('302a300506032b6570032100', 'hex'),
  ES256: Buffer.from('3039301306072a8648ce3d020106082a8648ce3d030107032200', 'hex')
}

// Edwards25519 (RFC 8032 section 5.1): the field prime, the curve constant d, and the
// y-coordinates of the eight points of small order (the identity 1, the point of order 2 -1,
// the two of order 4 0, the four of order 8). OpenSSL loads any 32 bytes as an Ed25519 key and
// does not check its order when it verifies: under a small-order key, R of small order with
// S = 0 verifies for every message, so a credential for one would let anyone make its codes.
const P25519 = 2n ** 255n - 19n
const modPow = (base, exponent, modulus) => {
  let result = 1n
  for (base %= modulus; exponent > 0n; exponent >>= 1n) {
    if (exponent & 1n) result = result * base % modulus
    base = base * base % modulus
  }
  return result
}
const D25519 = (-121665n * modPow(121666n, P25519 - 2n, P25519) % P25519 + P25519) % P25519
const Y_ORDER_8 = 0x7a03ac9277fdc74ec6cc392cfa53202a0f67100d760b3cba4fd84d3d706a17c7n
const SMALL_ORDER_Y = new Set([0n, 1n, P25519 - 1n, Y_ORDER_8, P25519 - Y_ORDER_8])

/** Section 8: an Ed25519 device key is the canonical encoding (y < p) of a point on the curve
 * that is not of small order; throws otherwise. */
function checkEd25519Key (raw) {
  const bytes = Buffer.from(raw)
  bytes[31] &= 0x7f // the top bit is x's sign
  const y = BigInt('0x' + Buffer.from(bytes).reverse().toString('hex')) // little-endian
  if (y >= P25519) throw new Error('Ed25519 key not canonically encoded')
  if (SMALL_ORDER_Y.has(y)) throw new Error('Ed25519 key of small order')
  // x^2 = (y^2 - 1) / (d y^2 + 1) must have a root: Euler's criterion.
  const u = (y * y - 1n) % P25519
  const v = (D25519 * y * y + 1n) % P25519
  if (modPow(u * modPow(v, P25519 - 2n, P25519) % P25519, (P25519 - 1n) / 2n, P25519) !== 1n) {
    throw new Error('Ed25519 key not a point on the curve')
  }
}

// Strict decoding: integers and lengths in their shortest form, no indefinite lengths, no
// tags, no undefined, no duplicate keys, maps with integer keys (useMaps), and cborg throws
// on trailing bytes. Floats cannot be checked on decode, hence the re-encoding below.
const STRICT = {
  strict: true, useMaps: true, rejectDuplicateMapKeys: true,
  allowIndefinite: false, allowUndefined: false
}

/** Base45 (RFC 9285), strictly: the 45 characters only, no padding, no group overflow. */
function base45Decode (text) {
  if (!/^[0-9A-Z $%*+\-./:]*$/.test(text)) throw new Error('not base45 characters')
  if (text.length % 3 === 1) throw new Error('impossible base45 length')
  const bytes = []
  for (let i = 0; i < text.length; i += 3) {
    const [c, d, e = 0] = [...text.slice(i, i + 3)].map((ch) => BASE45.indexOf(ch))
    const n = c + d * 45 + e * 45 * 45
    if (text.length - i >= 3) {
      if (n > 0xffff) throw new Error('base45 group above 65535')
      bytes.push(n >> 8, n & 0xff)
    } else {
      if (n > 0xff) throw new Error('base45 final pair above 255')
      bytes.push(n)
    }
  }
  return Uint8Array.from(bytes)
}

// One code, one encoding: a decoded structure must re-encode to exactly the bytes received.
// rfc8949EncodeOptions sorts map keys bytewise, as the spec says (cborg's default sorts by
// major type first). For idcode's maps (keys 1, 4 and 4, 6, 7, -1, all one byte) every
// deterministic order agrees, so this also matches the issuer's cbor2 output.
const isDeterministic = (value, bytes) =>
  Buffer.from(encode(value, rfc8949EncodeOptions)).equals(bytes)
const isInteger = (v) => Number.isInteger(v) || typeof v === 'bigint'

/** The COSE Sig_structure ["Signature1", protected, h'', payload] (RFC 9052 section 4.4). */
const sigStructure = (protectedBytes, payload) =>
  encode(['Signature1', protectedBytes, EMPTY, payload])

/** A 64-byte COSE signature: Ed25519, ES256 or SM2 as raw r || s (not DER). */
function signatureVerifies (alg, key, data, signature) {
  if (alg === 'SM2') return sm2Verifies(key, data, signature)
  return alg === 'EdDSA'
    ? verifySignature(null, data, key, signature)
    : verifySignature('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, signature)
}

/** An issuer key from its JWK: node:crypto's KeyObject, or for SM2 (a JWK node cannot load:
 * kty EC, crv SM2, idcode's convention) the point, checked to lie on the curve. */
function issuerKey (jwk) {
  return jwk.alg === 'SM2' ? sm2PublicPoint(jwk) : createPublicKey({ key: jwk, format: 'jwk' })
}

// SM2 (GB/T 32918.5, the recommended curve sm2p256v1) and the GM/T 0009 default user id.
const SM2_P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFFn
const SM2_A = SM2_P - 3n
const SM2_B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93n
const SM2_N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123n
const SM2_G = {
  x: 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7n,
  y: 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0n
}
const SM2_DEFAULT_ID = Buffer.from('1234567812345678')
const mod = (value, m) => ((value % m) + m) % m
const toBig = (bytes) => BigInt('0x' + (Buffer.from(bytes).toString('hex') || '0'))
const to32 = (value) => Buffer.from(value.toString(16).padStart(64, '0'), 'hex')
const sm3 = (...parts) => createHash('sm3').update(Buffer.concat(parts)).digest()

function sm2PublicPoint (jwk) {
  if (jwk.kty !== 'EC' || jwk.crv !== 'SM2') throw new Error('an SM2 JWK has kty EC, crv SM2')
  const [x, y] = ['x', 'y'].map((member) => {
    const bytes = Buffer.from(String(jwk[member]), 'base64url')
    if (bytes.length !== 32 || bytes.toString('base64url') !== jwk[member]) {
      throw new Error(`SM2 JWK member ${member} is not 32 bytes of base64url`)
    }
    return toBig(bytes)
  })
  if (x >= SM2_P || y >= SM2_P || mod(y * y - (x * x * x + SM2_A * x + SM2_B), SM2_P) !== 0n) {
    throw new Error('the SM2 key is not a point on the curve')
  }
  return { x, y } // the cofactor is 1: any point on the curve but infinity has order n
}

// Points in Jacobian coordinates (X, Y, Z) for x = X / Z^2, y = Y / Z^3; null is infinity.
function sm2Double (P) {
  if (P === null || P.Y === 0n) return null
  const p = SM2_P
  const YY = P.Y * P.Y % p
  const S = 4n * P.X * YY % p
  const ZZ = P.Z * P.Z % p
  const M = (3n * P.X * P.X + SM2_A * ZZ * ZZ) % p
  const X = mod(M * M - 2n * S, p)
  return { X, Y: mod(M * (S - X) - 8n * YY * YY, p), Z: 2n * P.Y * P.Z % p }
}

function sm2Add (P, Q) {
  if (P === null) return Q
  if (Q === null) return P
  const p = SM2_P
  const Z1Z1 = P.Z * P.Z % p
  const Z2Z2 = Q.Z * Q.Z % p
  const U1 = P.X * Z2Z2 % p
  const U2 = Q.X * Z1Z1 % p
  const S1 = P.Y * Q.Z * Z2Z2 % p
  const S2 = Q.Y * P.Z * Z1Z1 % p
  if (U1 === U2) return S1 === S2 ? sm2Double(P) : null
  const H = mod(U2 - U1, p)
  const R = mod(S2 - S1, p)
  const HH = H * H % p
  const HHH = H * HH % p
  const X = mod(R * R - HHH - 2n * U1 * HH, p)
  return { X, Y: mod(R * (U1 * HH - X) - S1 * HHH, p), Z: H * P.Z * Q.Z % p }
}

function sm2Multiply (k, point) {
  let result = null
  const P = { X: point.x, Y: point.y, Z: 1n }
  for (let bit = BigInt(k.toString(2).length - 1); bit >= 0n; bit--) {
    result = sm2Double(result)
    if ((k >> bit) & 1n) result = sm2Add(result, P)
  }
  return result
}

/** GB/T 32918.2 section 7: verify r || s over SM3(Z_A || message), Z_A from the default id. */
function sm2Verifies (key, message, signature) {
  if (signature.length !== 64) return false
  const r = toBig(signature.subarray(0, 32))
  const s = toBig(signature.subarray(32))
  if (r < 1n || r >= SM2_N || s < 1n || s >= SM2_N) return false
  const entl = Buffer.from([0, SM2_DEFAULT_ID.length * 8])
  const za = sm3(entl, SM2_DEFAULT_ID, to32(SM2_A), to32(SM2_B), to32(SM2_G.x), to32(SM2_G.y),
    to32(key.x), to32(key.y))
  const e = toBig(sm3(za, message))
  const t = (r + s) % SM2_N
  if (t === 0n) return false
  const point = sm2Add(sm2Multiply(s, SM2_G), sm2Multiply(t, key))
  if (point === null) return false
  const zInverse = modPow(point.Z, SM2_P - 2n, SM2_P)
  const x1 = point.X * zInverse * zInverse % SM2_P
  return (e + x1) % SM2_N === r
}

/** The device-code prefix of a deployment whose codes use `prefix`: WH1: gives WH2:. */
export const devicePrefix = (prefix) => prefix.replace(/[0-9]*:$/, '') + '2:'

/**
 * A status list ({"bits": 1, "size": N, "lst": base64url of ZLIB}, docs/trust.md), read
 * once per trust: index i is bit i % 8 (least significant first) of byte i / 8.
 */
const statusLists = new WeakMap()
function isRevoked (status, index) {
  let list = statusLists.get(status)
  if (list === undefined) {
    const bits = inflateSync(Buffer.from(status.lst, 'base64url'))
    if (status.bits !== 1 || bits.length !== Math.ceil(status.size / 8)) {
      throw new Error('not a status list')
    }
    list = { size: status.size, bits }
    statusLists.set(status, list)
  }
  // An index past the end is a card enrolled after the list was made: not revoked.
  return index < list.size && ((list.bits[index >> 3] >> (index & 7)) & 1) === 1
}

const statusIndex = (card) => (card[6] << 16) | (card[7] << 8) | card[8]

/** Untagged COSE_Sign1 with exactly {1: alg, 4: kid} protected; throws on anything else. */
function decodeSign1 (message) {
  const parts = decode(message, STRICT)
  if (!Array.isArray(parts) || parts.length !== 4) throw new Error('not a COSE_Sign1 array')
  const [protectedBytes, unprotected, payload, signature] = parts
  if (![protectedBytes, payload, signature].every((p) => p instanceof Uint8Array)) {
    throw new Error('protected, payload and signature must be byte strings')
  }
  if (!(unprotected instanceof Map) || unprotected.size !== 0) {
    throw new Error('unprotected header must be an empty map')
  }
  if (signature.length !== 64) throw new Error('signature must be 64 bytes')
  const header = decode(protectedBytes, STRICT)
  if (!(header instanceof Map) || header.size !== 2 || !header.has(1) || !header.has(4)) {
    throw new Error('protected header must hold exactly alg (1) and kid (4)')
  }
  const alg = header.get(1)
  const kid = header.get(4)
  // A text alg is legal COSE: it is refused later as unsupported, not here as malformed.
  if (!(isInteger(alg) || typeof alg === 'string') || !(kid instanceof Uint8Array)) {
    throw new Error('alg must be an integer or text, kid a byte string')
  }
  if (!isDeterministic(new Map([[1, alg], [4, kid]]), protectedBytes) ||
      !isDeterministic([protectedBytes, new Map(), payload, signature], message)) {
    throw new Error('not deterministically encoded')
  }
  return { protectedBytes, alg, kid, payload, signature }
}

/** The CWT claims map with exactly exp, iat, cti (8 bytes) and card (11 bytes). */
function decodeClaims (payload) {
  const claims = decode(payload, STRICT)
  if (!(claims instanceof Map) || claims.size !== 4 || !CLAIM_KEYS.every((k) => claims.has(k))) {
    throw new Error('claims must be exactly exp, iat, cti and card')
  }
  if (!isDeterministic(claims, payload)) throw new Error('claims not deterministically encoded')
  const [exp, iat, cti, card] = CLAIM_KEYS.map((k) => claims.get(k))
  const isDate = (v) => Number.isInteger(v) && v >= 0 && v <= MAX_NUMERIC_DATE
  if (!isDate(exp) || !isDate(iat) || iat > exp) throw new Error('bad exp or iat')
  if (!(cti instanceof Uint8Array) || cti.length !== 8) throw new Error('cti must be 8 bytes')
  if (!(card instanceof Uint8Array) || card.length !== 11) throw new Error('card: 11 bytes')
  if (((card[9] >> 2) & 0xf) > 7) throw new Error('card age band out of range')
  return { exp, iat, cti: Buffer.from(cti).toString('hex'), card }
}

/**
 * A device code's COSE bytes, exactly the section 8 layout (no general CBOR decoding: one
 * fixed form is the only one accepted):
 *   84 40 a0 58 LL <payload> 58 40 <device signature>
 *   payload    = 84 1a <iat:4> 48 <cti:8> 58 LL <credential> 58 40 <issuer signature>
 *   credential = kind (1) kid (1) exp (4) card (11) key (32 Ed25519 | 33 P-256 compressed)
 * Throws on anything else, including an invalid device key.
 */
function decodeDeviceCode (m) {
  const bytes = Buffer.from(m.buffer, m.byteOffset, m.length)
  if (m.length < 5 || m[0] !== 0x84 || m[1] !== 0x40 || m[2] !== 0xa0 || m[3] !== 0x58) {
    throw new Error('not a device code: empty protected header, empty unprotected map')
  }
  const payloadEnd = 5 + m[4]
  if (m.length !== payloadEnd + 66 || m[payloadEnd] !== 0x58 || m[payloadEnd + 1] !== 0x40) {
    throw new Error('not [h\'\', {}, payload, 64-byte signature] with nothing after it')
  }
  const payload = bytes.subarray(5, payloadEnd)
  if (payload.length < 17 || payload[0] !== 0x84 || payload[1] !== 0x1a ||
      payload[6] !== 0x48 || payload[15] !== 0x58) {
    throw new Error('the payload is not [iat (4 bytes), cti (8 bytes), credential, signature]')
  }
  const iat = payload.readUInt32BE(2)
  // Deterministic CBOR: 0x1a (4 bytes) is the shortest form only for values above 65535.
  if (iat <= 0xffff) throw new Error('iat not in its shortest form')
  // The code's end, iat + 60, is a 32-bit time as every time in a code is.
  if (iat > MAX_NUMERIC_DATE - DEVICE_CODE_LIFETIME) throw new Error('iat + 60 past 32 bits')
  const credentialEnd = 17 + payload[16]
  if (payload.length !== credentialEnd + 66 || payload[credentialEnd] !== 0x58 ||
      payload[credentialEnd + 1] !== 0x40) {
    throw new Error('the payload is not [iat, cti, credential, 64-byte signature]')
  }
  const credential = payload.subarray(17, credentialEnd)
  const kind = DEVICE_KINDS.get(credential[0])
  if (kind === undefined) throw new Error('unknown device key kind')
  if (credential.length !== 17 + kind.keyLength) throw new Error('credential length')
  const kid = String.fromCharCode(credential[1])
  if (!/^[A-Za-z0-9]$/.test(kid)) throw new Error('kid is not an ASCII letter or digit')
  const card = credential.subarray(6, 17)
  if (((card[9] >> 2) & 0xf) > 7) throw new Error('card age band out of range')
  const rawKey = credential.subarray(17)
  if (kind.alg === 'EdDSA') checkEd25519Key(rawKey)
  const deviceKey = createPublicKey({
    key: Buffer.concat([SPKI_HEADERS[kind.alg], rawKey]), format: 'der', type: 'spki'
  })
  return {
    payload,
    iat,
    cti: payload.subarray(7, 15).toString('hex'),
    credential,
    kid,
    credentialExp: credential.readUInt32BE(2),
    card,
    deviceAlg: kind.alg,
    deviceKey,
    // The device id: the first 8 bytes of SHA-256 of the key as the credential carries it.
    deviceId: createHash('sha256').update(rawKey).digest().subarray(0, 8).toString('hex'),
    issuerSignature: payload.subarray(credentialEnd + 2),
    deviceSignature: bytes.subarray(payloadEnd + 2)
  }
}

/**
 * Verify one code text at `now` (seconds since the epoch). `trust` has the shape of a test
 * vector's "trust" member: { prefix, algorithms, clock_skew, max_lifetime, jwks } and,
 * optionally, fresh_until, status (a status list) and revoked_devices (hex device ids).
 * `replaySeen` is a Set of hex code ids; an accepted code's id is added to it. Returns
 * { valid, reason }, with `device` (its id) for an accepted device code. Never throws on a
 * bad code.
 */
export function verify (code, trust, now, replaySeen = new Set()) {
  const fail = (reason) => ({ valid: false, reason })
  // Step 0: a terminal whose trust is out of date cannot judge any code.
  if (trust.fresh_until != null && now >= trust.fresh_until) return fail('stale_trust')
  if (typeof code !== 'string') return fail('malformed')
  // Count code points, as the reference does; a quick bound first keeps huge input cheap.
  if (code.length > 2 * MAX_CODE_LENGTH || [...code].length > MAX_CODE_LENGTH) {
    return fail('malformed')
  }
  if (code.startsWith(trust.prefix)) {
    return verifyVersion1(code.slice(trust.prefix.length), trust, now, replaySeen)
  }
  const device = devicePrefix(trust.prefix)
  if (code.startsWith(device)) {
    return verifyDeviceCode(code.slice(device.length), trust, now, replaySeen)
  }
  return fail('unknown_prefix')
}

/** Section 2, steps 3-14, for the text after the prefix. */
function verifyVersion1 (body, trust, now, replaySeen) {
  const fail = (reason) => ({ valid: false, reason })
  let message
  try {
    message = decodeSign1(base45Decode(body))
  } catch {
    return fail('malformed')
  }

  // The verifier's own list decides, never the header: a text or unknown alg is refused.
  const alg = typeof message.alg === 'number' ? COSE_ALGS.get(message.alg) : undefined
  if (!trust.algorithms.includes(alg)) return fail('unsupported_alg')
  // The COSE kid is the UTF-8 bytes of the JWK's kid (one ASCII letter or digit).
  const jwk = trust.jwks.keys.find((k) =>
    typeof k.kid === 'string' && Buffer.from(k.kid).equals(message.kid))
  if (!jwk) return fail('unknown_key')
  // Algorithm confusion: a key is only ever used with its own algorithm.
  if (jwk.alg !== alg) return fail('unsupported_alg')

  const key = issuerKey(jwk)
  const toBeSigned = sigStructure(message.protectedBytes, message.payload)
  if (!signatureVerifies(alg, key, toBeSigned, message.signature)) return fail('bad_signature')

  // Claims are only parsed once the signature shows the issuer wrote them.
  let claims
  try {
    claims = decodeClaims(message.payload)
  } catch {
    return fail('malformed')
  }
  // No code may live longer than max_lifetime, whoever signed it: a leaked or retired key
  // could otherwise mint codes valid for decades.
  if (claims.exp - claims.iat > trust.max_lifetime) return fail('malformed')
  // The JWK's nbf/exp bound the period in which the key may sign: a code "issued" outside
  // it (e.g. backdated with a retired key) is not trusted.
  if ((jwk.nbf != null && claims.iat < jwk.nbf) || (jwk.exp != null && claims.iat >= jwk.exp)) {
    return fail('unknown_key')
  }
  const skew = trust.clock_skew
  if (now >= claims.exp + skew) return fail('expired')
  if (now < claims.iat - skew) return fail('not_yet_valid')
  if (trust.status != null && isRevoked(trust.status, statusIndex(claims.card))) {
    return fail('revoked')
  }
  // Replay state is touched last, so forged or expired codes cannot fill it.
  if (replaySeen.has(claims.cti)) return fail('replayed')
  replaySeen.add(claims.cti)
  return { valid: true, reason: 'ok' }
}

/** Section 8, steps 3-16, for the text after the device-code prefix. */
function verifyDeviceCode (body, trust, now, replaySeen) {
  const fail = (reason) => ({ valid: false, reason })
  let code
  try {
    code = decodeDeviceCode(base45Decode(body))
  } catch {
    return fail('malformed')
  }
  // The credential names the issuer key; that key's own algorithm is the credential's.
  const jwk = trust.jwks.keys.find((k) => k.kid === code.kid)
  if (!jwk) return fail('unknown_key')
  if (!trust.algorithms.includes(jwk.alg)) return fail('unsupported_alg')
  // The issuer signed a COSE_Sign1 whose protected header {1: alg, 4: kid} is not sent:
  // rebuild it from the trusted key.
  const issuerHeader = encode(new Map([[1, COSE_ALG_IDS.get(jwk.alg)], [4, Buffer.from(code.kid)]]),
    rfc8949EncodeOptions)
  const credentialKey = issuerKey(jwk)
  if (!signatureVerifies(jwk.alg, credentialKey, sigStructure(issuerHeader, code.credential),
    code.issuerSignature)) {
    return fail('bad_signature')
  }
  // A key signs credentials within its signing period [nbf, exp), each valid at most 7 days.
  if ((jwk.nbf != null && code.credentialExp <= jwk.nbf) ||
      (jwk.exp != null && code.credentialExp > jwk.exp + MAX_CREDENTIAL_LIFETIME)) {
    return fail('unknown_key')
  }
  // The device signed the payload under an empty protected header, with the key and
  // algorithm the issuer certified: a code cannot choose its algorithm.
  if (!signatureVerifies(code.deviceAlg, code.deviceKey, sigStructure(EMPTY, code.payload),
    code.deviceSignature)) {
    return fail('bad_signature')
  }
  const skew = trust.clock_skew
  if (now >= code.credentialExp + skew) return fail('expired') // the phone must renew online
  if (code.iat >= code.credentialExp) return fail('expired') // made after the credential ended
  if (now >= code.iat + DEVICE_CODE_LIFETIME + skew) return fail('expired') // old, or clock behind
  if (now < code.iat - skew) return fail('not_yet_valid') // the phone's clock is ahead
  if ((trust.revoked_devices ?? []).includes(code.deviceId)) return fail('revoked')
  if (trust.status != null && isRevoked(trust.status, statusIndex(code.card))) {
    return fail('revoked')
  }
  if (replaySeen.has(code.cti)) return fail('replayed')
  replaySeen.add(code.cti)
  return { valid: true, reason: 'ok', device: code.deviceId }
}

function runVectors (dir) {
  let passed = 0
  let failed = 0
  for (const name of readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
    const vector = JSON.parse(readFileSync(`${dir}/${name}`, 'utf8'))
    const got = verify(vector.code, vector.trust, vector.validation_clock_epoch,
      new Set(vector.replay_seen))
    const want = vector.expected
    const label = name.replace(/\.json$/, '')
    // An accepted device code names its device, which the vector's layers give.
    const wantDevice = want.valid ? vector.layers.device_id : undefined
    if (got.reason === want.reason && got.valid === want.valid && got.device === wantDevice) {
      passed++
      console.log(`PASS ${label} ${got.reason}`)
    } else {
      failed++
      console.log(`FAIL ${label} got ${got.reason} ${got.device ?? ''} expected ${want.reason} ` +
        `${wantDevice ?? ''}`)
    }
  }
  console.log(`${passed} passed, ${failed} failed`)
  return failed === 0 && passed > 0
}

const here = fileURLToPath(import.meta.url)
if (process.argv[1] === here) {
  const dir = process.argv[2] ?? `${dirname(here)}/../test-vectors/cases`
  process.exitCode = runVectors(dir) ? 0 : 1
}
