// An idcode v1 verifier written from the format description alone, checked against the
// committed test vectors. It shows that an integrator needs nothing from the Python code:
// base45, a strict CBOR decoder and the platform's Ed25519 / P-256 verification suffice.
//
//   node verify.mjs [VECTOR_DIR]      (default: ../test-vectors/cases)
import { createPublicKey, verify as verifySignature } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { decode, encode, rfc8949EncodeOptions } from 'cborg'

const MAX_CODE_LENGTH = 512 // refuse hostile scanner input before doing any work
const BASE45 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:'
const COSE_ALGS = new Map([[-8, 'EdDSA'], [-7, 'ES256']]) // COSE alg id -> JOSE name
const CLAIM_KEYS = [4, 6, 7, -1] // exp, iat, cti, card: exactly these, nothing else
const MAX_NUMERIC_DATE = 2 ** 32 - 1

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
  return { exp, iat, cti: Buffer.from(cti).toString('hex') }
}

/**
 * Verify one code text at `now` (seconds since the epoch). `trust` has the shape of a test
 * vector's "trust" member: { prefix, algorithms, clock_skew, max_lifetime, jwks }. `replaySeen` is a Set of
 * hex code ids; an accepted code's id is added to it. Never throws on a bad code.
 */
export function verify (code, trust, now, replaySeen = new Set()) {
  const fail = (reason) => ({ valid: false, reason })
  if (typeof code !== 'string') return fail('malformed')
  // Count code points, as the reference does; a quick bound first keeps huge input cheap.
  if (code.length > 2 * MAX_CODE_LENGTH || [...code].length > MAX_CODE_LENGTH) {
    return fail('malformed')
  }
  if (!code.startsWith(trust.prefix)) return fail('unknown_prefix')
  let message
  try {
    message = decodeSign1(base45Decode(code.slice(trust.prefix.length)))
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

  const toBeSigned = encode(['Signature1', message.protectedBytes, new Uint8Array(0),
    message.payload])
  const key = createPublicKey({ key: jwk, format: 'jwk' })
  const signatureOk = alg === 'EdDSA'
    ? verifySignature(null, toBeSigned, key, message.signature)
    // COSE carries ES256 signatures as raw r || s, not DER.
    : verifySignature('sha256', toBeSigned, { key, dsaEncoding: 'ieee-p1363' },
      message.signature)
  if (!signatureOk) return fail('bad_signature')

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
  // Replay state is touched last, so forged or expired codes cannot fill it.
  if (replaySeen.has(claims.cti)) return fail('replayed')
  replaySeen.add(claims.cti)
  return { valid: true, reason: 'ok' }
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
    if (got.reason === want.reason && got.valid === want.valid) {
      passed++
      console.log(`PASS ${label} ${got.reason}`)
    } else {
      failed++
      console.log(`FAIL ${label} got ${got.reason} expected ${want.reason}`)
    }
  }
  console.log(`${passed} passed, ${failed} failed`)
  return failed === 0 && passed > 0
}

if (process.argv[1] === import.meta.filename) {
  const dir = process.argv[2] ?? `${import.meta.dirname}/../test-vectors/cases`
  process.exitCode = runVectors(dir) ? 0 : 1
}
