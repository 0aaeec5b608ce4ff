// The web wallet (docs/wallet.md): signs the citizen in, registers this browser as a device,
// shows a fresh code made on the phone, offline too, renews the credential when online,
// lists and removes devices, and asks the service for consent codes.

import * as store from "./store.js";
import {
  compressedPoint,
  deviceToken,
  fromBase64url,
  hex,
  makeDeviceCode,
  newDeviceKey,
  publicJwk,
  readCredential,
} from "./devicecode.js";
import { SignInError, finishSignIn, isSignInAnswer, startSignIn } from "./oidc.js";
import { drawCode } from "./qr.js";

const REFRESH_BEFORE = 10; // seconds left on a code when the next one is made
// The credential is renewed online once a seventh of its lifetime has passed (a day, with the
// service's default 7 days), and tried at most that often, and at most hourly, while open.
const RENEW_FRACTION = 7;
const RENEW_RETRY = 3600;
const CLOCK_WARNING = 10; // seconds off the service's clock: a warning
const CLOCK_REFUSED = 30; // the terminals' clock-skew allowance: codes get refused
const SESSION_MARGIN = 60; // an ID token this close to its expiry is not used
const LABEL = "Web wallet";
const IDENTIFYING = new Set(["name", "id_number", "sex", "birth_date"]);
const ATTRIBUTE_NAMES = {
  name: "Name",
  id_number: "ID number",
  sex: "Sex",
  birth_date: "Date of birth",
  residency: "Residency",
  age_band: "Age band",
  programmes: "Programmes",
};

const $ = (id) => document.getElementById(id);
const now = () => Math.floor(Date.now() / 1000);

let config = null;
let device = null; // the "device" record (store.js)
let session = null; // {idToken, expiresAt}
let current = null; // the code on screen: {code, iat, expiresAt}
let making = false;
let renewing = false;
let lastRenewalTry = 0;
let consentTimer = null;
let signedInNow = false; // this page load is a sign-in's answer

// A 401 from the service: sign in again, unless the citizen has just signed in (then the
// service refuses this provider's tokens, and another round trip would not change that).
function signInAgain(after, answer) {
  if (signedInNow) {
    say(`The service refused the sign-in: ${problemText(answer.body)}.`, "error");
    return null;
  }
  return signIn(after);
}

class Offline extends Error {}

// -- screens and messages -------------------------------------------------------------------

function show(screen) {
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.id !== screen;
  }
  document.body.dataset.screen = screen;
}

function say(text, kind = "info") {
  const element = $("message");
  element.textContent = text;
  element.className = kind;
  element.hidden = !text;
}

function showNetwork() {
  const badge = $("network");
  badge.hidden = navigator.onLine;
  badge.textContent = "Offline: codes are made on this phone";
}

function formatSeconds(seconds) {
  const magnitude = Math.abs(seconds);
  if (magnitude < 120) return `${magnitude} s`;
  if (magnitude < 7200) return `${Math.round(magnitude / 60)} min`;
  return `${Math.round(magnitude / 3600)} h`;
}

function formatTime(epoch) {
  return new Date(epoch * 1000).toLocaleString();
}

// -- the service ----------------------------------------------------------------------------

// Calls the service; notes its clock from server_time. Throws Offline when it cannot be reached.
async function api(method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const sent = Date.now();
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new Offline();
  }
  const text = await response.text();
  let answer = null;
  try {
    answer = text ? JSON.parse(text) : null;
  } catch {
    answer = null;
  }
  if (answer && typeof answer.server_time === "number") {
    await noteServerTime(answer.server_time, sent, Date.now());
  }
  return { status: response.status, ok: response.ok, body: answer };
}

function problemText(answer) {
  if (!answer || typeof answer !== "object") return "the service answered in an unexpected way";
  return answer.detail ? `${answer.title} (${answer.detail})` : answer.title || answer.reason;
}

// The service's clock minus this phone's, from an answer's server_time (the middle of the
// round trip is when the service wrote it).
async function noteServerTime(serverTime, sentMs, receivedMs) {
  const offset = Math.round(serverTime - (sentMs + receivedMs) / 2000);
  await store.put("clock", { offset, measuredAt: now() });
  showClock(offset);
}

function showClock(offset) {
  const warning = $("clock-warning");
  if (offset === null || Math.abs(offset) < CLOCK_WARNING) {
    warning.hidden = true;
    delete document.body.dataset.clockOffset;
    return;
  }
  document.body.dataset.clockOffset = String(offset);
  const direction = offset > 0 ? "behind" : "ahead of";
  warning.textContent =
    `This phone's clock is ${formatSeconds(offset)} ${direction} the service's. ` +
    (Math.abs(offset) >= CLOCK_REFUSED
      ? "Gates will refuse its codes: set the clock automatically (network time) in the phone's settings."
      : "Set the clock automatically in the phone's settings before codes are refused.");
  warning.className = Math.abs(offset) >= CLOCK_REFUSED ? "warning serious" : "warning";
  warning.hidden = false;
}

async function loadConfig() {
  const sent = Date.now();
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (response.ok) {
      config = await response.json();
      await store.put("config", config);
      await noteServerTime(config.server_time, sent, Date.now());
      return;
    }
    const answer = await response.json().catch(() => null);
    say(`This wallet cannot sign you in here: ${problemText(answer)}.`, "error");
  } catch {
    // offline: the copy kept from the last time
  }
  config = config || (await store.get("config")) || null;
}

async function validSession() {
  session = session || (await store.get("session")) || null;
  if (session && session.expiresAt - SESSION_MARGIN > now()) return session;
  return null;
}

async function signIn(after) {
  if (!config) {
    say("Signing in needs a network.", "error");
    return;
  }
  await startSignIn(config, after);
}

// -- registration ---------------------------------------------------------------------------

async function register() {
  const signedIn = await validSession();
  if (!signedIn) return signIn("register");
  say("Setting up this phone…");
  const keyPair = await newDeviceKey();
  const jwk = await publicJwk(keyPair);
  let answer;
  try {
    answer = await api("POST", "/v1/devices", {
      token: signedIn.idToken,
      body: { public_jwk: jwk, label: LABEL },
    });
  } catch (error) {
    if (error instanceof Offline) return say("Setting up this phone needs a network.", "error");
    throw error;
  }
  if (answer.status === 401) return signInAgain("register", answer);
  if (answer.status === 409 && answer.body?.reason === "too_many_devices") {
    say("You have the most devices allowed. Remove one you no longer use, then come back.", "error");
    return showDevices();
  }
  if (!answer.ok) return say(`This phone could not be set up: ${problemText(answer.body)}.`, "error");
  const record = deviceRecord(answer.body, keyPair);
  const certified = readCredential(record.credential).devicePublicKey;
  if (hex(certified) !== hex(compressedPoint(jwk))) {
    return say("The service certified another key than this phone's; nothing was stored.", "error");
  }
  device = record;
  await store.put("device", device);
  say("");
  showCode();
}

function deviceRecord(answer, keyPair) {
  return {
    keyPair,
    id: answer.id,
    deviceId: answer.device_id,
    alg: answer.alg,
    label: answer.label,
    credential: fromBase64url(answer.credential),
    credentialExpiresAt: answer.credential_expires_at,
    codePrefix: answer.code_prefix,
    codeLifetime: answer.code_lifetime,
    createdAt: answer.created_at,
    renewedAt: now(),
    lifetime: answer.credential_expires_at - answer.server_time,
  };
}

function renewalDue() {
  const lifetime = device.lifetime || 7 * 86400; // a record kept before lifetime was
  const period = Math.max(60, Math.floor(lifetime / RENEW_FRACTION));
  return now() - device.renewedAt >= period && now() - lastRenewalTry >= Math.min(period, RENEW_RETRY);
}

// -- codes ----------------------------------------------------------------------------------

function credentialLeft() {
  return device.credentialExpiresAt - now();
}

async function makeCode() {
  if (making || !device) return;
  making = true;
  try {
    const canvas = $("qr");
    if (credentialLeft() <= 0) {
      current = null;
      canvas.hidden = true;
      delete canvas.dataset.code;
      $("countdown").textContent = "";
      $("credential-status").textContent =
        "This phone's offline pass has expired: connect to the network to renew it.";
      return;
    }
    const made = await makeDeviceCode({
      privateKey: device.keyPair.privateKey,
      blob: device.credential,
      prefix: device.codePrefix,
      now: now(),
    });
    current = { code: made.code, iat: made.iat, expiresAt: made.iat + device.codeLifetime };
    const symbol = drawCode(canvas, made.code);
    canvas.hidden = false;
    canvas.dataset.code = made.code;
    canvas.dataset.codeId = hex(made.codeId);
    canvas.dataset.iat = String(made.iat);
    canvas.dataset.version = String(symbol.version);
    $("countdown-bar").max = device.codeLifetime;
  } finally {
    making = false;
  }
  showCredentialStatus();
}

function showCredentialStatus() {
  if (!device || credentialLeft() <= 0) return;
  const left = credentialLeft();
  $("credential-status").textContent =
    left < 86400
      ? `Offline pass ends in ${formatSeconds(left)}: connect to renew it.`
      : `Offline pass valid until ${formatTime(device.credentialExpiresAt)}.`;
}

async function tick() {
  if (!device || document.body.dataset.screen !== "code") return;
  const left = current ? current.expiresAt - now() : 0;
  // A new code before this one ends, and at once if the clock jumped back past its iat.
  if (!current || left <= REFRESH_BEFORE || current.iat > now()) {
    await makeCode();
  }
  if (current) {
    const remaining = current.expiresAt - now();
    $("countdown").textContent = `Valid for ${remaining} s`;
    $("countdown-bar").value = remaining;
  }
  if (navigator.onLine && renewalDue()) renew(false);
}

function showCode() {
  show("code");
  current = null;
  tick();
}

// -- renewal --------------------------------------------------------------------------------

async function renew(asked) {
  if (renewing || !device) return;
  renewing = true;
  lastRenewalTry = now();
  try {
    const token = await deviceToken({
      privateKey: device.keyPair.privateKey,
      deviceUuid: device.id,
      now: now(),
    });
    const answer = await api("POST", `/v1/devices/${device.id}/credential`, { token });
    if (answer.ok) {
      const renewed = deviceRecord(answer.body, device.keyPair);
      device = { ...device, ...renewed, createdAt: device.createdAt };
      await store.put("device", device);
      showCredentialStatus();
      if (asked) say("Offline pass renewed.");
      return;
    }
    if (answer.status === 403 && answer.body?.reason === "device_removed") {
      await forgetDevice();
      show("removed");
      return;
    }
    const clock = await store.get("clock");
    const clockHint =
      answer.status === 401 && clock && Math.abs(clock.offset) >= CLOCK_REFUSED
        ? " This phone's clock is wrong; set it automatically."
        : "";
    say(`The offline pass could not be renewed: ${problemText(answer.body)}.${clockHint}`, "error");
  } catch (error) {
    if (!(error instanceof Offline)) throw error;
    if (asked) say("Renewing needs a network; codes go on offline.", "error");
  } finally {
    renewing = false;
  }
}

async function forgetDevice() {
  device = null;
  current = null;
  await store.remove("device");
}

// -- devices --------------------------------------------------------------------------------

async function showDevices() {
  const signedIn = await validSession();
  if (!signedIn) return signIn("devices");
  let answer;
  try {
    answer = await api("GET", "/v1/devices", { token: signedIn.idToken });
  } catch (error) {
    if (error instanceof Offline) return say("Your devices can be seen online only.", "error");
    throw error;
  }
  if (answer.status === 401) return signInAgain("devices", answer);
  if (!answer.ok) return say(`Your devices cannot be read: ${problemText(answer.body)}.`, "error");
  const list = $("device-list");
  list.replaceChildren();
  for (const entry of answer.body.devices) {
    list.append(deviceItem(entry, signedIn));
  }
  show("devices");
}

function deviceItem(entry, signedIn) {
  const item = document.createElement("li");
  item.dataset.deviceId = entry.device_id;
  const mine = device !== null && entry.device_id === device.deviceId;
  const title = document.createElement("strong");
  title.textContent = `${entry.label || "Device"} ${mine ? "(this phone)" : ""}`;
  const details = document.createElement("p");
  details.className = "quiet";
  details.textContent = entry.removed_at
    ? `Removed ${new Date(entry.removed_at).toLocaleString()}`
    : `Added ${new Date(entry.created_at).toLocaleString()}; offline pass until ${formatTime(entry.credential_expires_at)}; key ${entry.device_id}`;
  item.append(title, details);
  if (entry.removed_at) {
    item.classList.add("removed");
    return item;
  }
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "remove";
  remove.textContent = "Remove";
  remove.addEventListener("click", async () => {
    if (remove.dataset.confirm !== "yes") {
      remove.dataset.confirm = "yes";
      remove.className = "remove danger";
      remove.textContent = mine ? "Remove this phone: its codes stop working" : "Confirm: remove";
      return;
    }
    remove.disabled = true;
    await removeDevice(entry, mine, signedIn);
  });
  item.append(remove);
  return item;
}

async function removeDevice(entry, mine, signedIn) {
  let answer;
  try {
    answer = await api("DELETE", `/v1/devices/${entry.id}`, { token: signedIn.idToken });
  } catch (error) {
    if (error instanceof Offline) return say("Removing a device needs a network.", "error");
    throw error;
  }
  if (answer.status !== 204) return say(`The device was not removed: ${problemText(answer.body)}.`, "error");
  say(`Removed. Gates refuse its codes once they have synchronised.`);
  if (mine) {
    await forgetDevice();
    show("removed");
    return;
  }
  await showDevices();
}

// -- consent: show my identity to ... -------------------------------------------------------

async function showConsent() {
  const signedIn = await validSession();
  if (!signedIn) return signIn("consent");
  let answer;
  try {
    answer = await api("GET", "/v1/relying-parties", { token: signedIn.idToken });
  } catch (error) {
    if (error instanceof Offline) return say("Showing your identity needs a network.", "error");
    throw error;
  }
  if (answer.status === 401) return signInAgain("consent", answer);
  if (!answer.ok) return say(`The services cannot be read: ${problemText(answer.body)}.`, "error");
  const list = $("party-list");
  list.replaceChildren();
  for (const party of answer.body) {
    const item = document.createElement("li");
    const choose = document.createElement("button");
    choose.type = "button";
    choose.dataset.party = party.id;
    choose.textContent = party.name;
    choose.addEventListener("click", () => consentForm(party));
    const asks = document.createElement("p");
    asks.className = "quiet";
    asks.textContent = party.attributes.length
      ? `May ask for: ${party.attributes.map((a) => ATTRIBUTE_NAMES[a] || a).join(", ")}`
      : "May ask for nothing but your identifier at this service";
    item.append(choose, asks);
    list.append(item);
  }
  if (!answer.body.length) list.textContent = "No service can identify citizens yet.";
  $("consent-parties").hidden = false;
  $("consent-form").hidden = true;
  $("consent-code").hidden = true;
  show("consent");
}

function consentForm(party) {
  const form = $("consent-form");
  form.dataset.party = party.id;
  $("consent-party").textContent = party.name;
  $("consent-sector").textContent = `Sector: ${party.sector}`;
  for (const group of ["consent-identifying", "consent-other"]) {
    const fieldset = $(group);
    fieldset.replaceChildren(fieldset.querySelector("legend"));
  }
  for (const attribute of party.attributes) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = "attribute";
    box.value = attribute;
    box.checked = true;
    label.append(box, ` ${ATTRIBUTE_NAMES[attribute] || attribute}`);
    $(IDENTIFYING.has(attribute) ? "consent-identifying" : "consent-other").append(label);
  }
  $("consent-identifying").hidden = !party.attributes.some((a) => IDENTIFYING.has(a));
  $("consent-other").hidden = !party.attributes.some((a) => !IDENTIFYING.has(a));
  const purpose = $("consent-purpose");
  purpose.replaceChildren(new Option("Any of its purposes", ""));
  for (const name of party.purposes) purpose.append(new Option(name.replaceAll("_", " "), name));
  $("consent-parties").hidden = true;
  $("consent-code").hidden = true;
  form.hidden = false;
}

async function askConsentCode(event) {
  event.preventDefault();
  const signedIn = await validSession();
  if (!signedIn) return signIn("consent");
  const form = $("consent-form");
  const attributes = [...form.querySelectorAll("input[name=attribute]:checked")].map((box) => box.value);
  const disclose = { to: form.dataset.party, attributes };
  if ($("consent-purpose").value) disclose.purpose = $("consent-purpose").value;
  let answer;
  try {
    answer = await api("POST", "/v1/codes", { token: signedIn.idToken, body: { disclose } });
  } catch (error) {
    if (error instanceof Offline) return say("Showing your identity needs a network.", "error");
    throw error;
  }
  if (answer.status === 401) return signInAgain("consent", answer);
  if (!answer.ok) return say(`No code was made: ${problemText(answer.body)}.`, "error");
  const canvas = $("consent-qr");
  drawCode(canvas, answer.body.code);
  canvas.dataset.code = answer.body.code;
  const given = answer.body.disclose.attributes.map((a) => ATTRIBUTE_NAMES[a] || a);
  $("consent-summary").textContent =
    `Only ${answer.body.disclose.name} can use this code, once, to learn: ` +
    (given.length ? given.join(", ") : "nothing but your identifier at this service") +
    ". Anyone else who scans it learns only what any e-code shows.";
  const expiresAt = Date.parse(answer.body.expires_at) / 1000;
  clearInterval(consentTimer);
  const countdown = () => {
    const left = Math.round(expiresAt - now());
    $("consent-countdown").textContent =
      left > 0 ? `Valid for ${left} s` : "This code has expired: make a new one to show your identity.";
    canvas.hidden = left <= 0;
    if (left <= 0) clearInterval(consentTimer);
  };
  countdown();
  consentTimer = setInterval(countdown, 1000);
  form.hidden = true;
  $("consent-code").hidden = false;
  say("");
}

// -- start ----------------------------------------------------------------------------------

function back() {
  clearInterval(consentTimer);
  say("");
  if (device) showCode();
  else show("signed-out");
}

async function start() {
  showNetwork();
  window.addEventListener("online", () => {
    showNetwork();
    if (device && renewalDue()) renew(false);
  });
  window.addEventListener("offline", showNetwork);
  $("sign-in").addEventListener("click", () => signIn("register"));
  $("sign-in-again").addEventListener("click", () => signIn("register"));
  $("renew").addEventListener("click", () => renew(true));
  $("open-devices").addEventListener("click", () => showDevices());
  $("open-consent").addEventListener("click", () => showConsent());
  $("consent-form").addEventListener("submit", askConsentCode);
  for (const button of document.querySelectorAll("button.back")) button.addEventListener("click", back);
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("sw.js", { scope: "./" }).catch(() => {});
  }

  device = (await store.get("device")) || null;
  const clock = await store.get("clock");
  if (clock) showClock(clock.offset);
  await loadConfig();
  let after = null;
  if (isSignInAnswer() && config) {
    try {
      const signedIn = await finishSignIn(config);
      session = { idToken: signedIn.idToken, expiresAt: signedIn.expiresAt };
      await store.put("session", session);
      after = signedIn.after;
      signedInNow = true;
    } catch (error) {
      if (!(error instanceof SignInError)) throw error;
      say(error.message, "error");
    }
  }
  setInterval(tick, 1000);
  if (!device) {
    if (await validSession()) return register();
    return show("signed-out");
  }
  if (after === "devices") return showDevices();
  if (after === "consent") return showConsent();
  showCode();
}

start().catch((error) => {
  say(`The wallet stopped: ${error.message}`, "error");
});
