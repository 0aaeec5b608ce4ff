// The wallet's storage: one IndexedDB object store of records by name.
//
//   "device"   the device key pair (CryptoKey objects: IndexedDB keeps them as they are, the
//              private key still not extractable), the service's id for the device, the
//              credential blob and its expiry, the code prefix and lifetime
//   "session"  the citizen's ID token and its expiry (needed online only)
//   "clock"    the last measured difference between the service's clock and this phone's
//
// Nothing personal is stored: the credential carries the card's pseudonym and coarse
// attributes, as every code does; the ID token carries the ID number, which the wallet never
// reads and drops at sign-out and when it expires.

const DB_NAME = "idcode-wallet";
const STORE = "records";

let opened = null;

function database() {
  if (opened === null) {
    opened = new Promise((resolve, reject) => {
      const request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }
  return opened;
}

async function run(mode, action) {
  const db = await database();
  return new Promise((resolve, reject) => {
    const transaction = db.transaction(STORE, mode);
    const request = action(transaction.objectStore(STORE));
    transaction.oncomplete = () => resolve(request.result);
    transaction.onerror = () => reject(transaction.error);
    transaction.onabort = () => reject(transaction.error);
  });
}

export const get = (name) => run("readonly", (store) => store.get(name));
export const put = (name, value) => run("readwrite", (store) => store.put(value, name));
export const remove = (name) => run("readwrite", (store) => store.delete(name));
