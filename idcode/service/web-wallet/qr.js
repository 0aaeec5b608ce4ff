// Draws a code as a QR symbol: one alphanumeric segment (base45 and the prefix are the QR
// alphanumeric set), error correction level M, the smallest version that holds it, a quiet
// zone of four modules, whole pixels per module so scanners see sharp edges.

import qrcode from "./vendor/qrcode-generator/qrcode.mjs";

const QUIET_ZONE = 4;

export function drawCode(canvas, text, maxPixels = 360) {
  const symbol = qrcode(0, "M");
  symbol.addData(text, "Alphanumeric");
  symbol.make();
  const modules = symbol.getModuleCount();
  const scale = Math.max(2, Math.floor(maxPixels / (modules + 2 * QUIET_ZONE)));
  const size = (modules + 2 * QUIET_ZONE) * scale;
  canvas.width = size;
  canvas.height = size;
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, size, size);
  context.fillStyle = "#000";
  for (let row = 0; row < modules; row += 1) {
    for (let column = 0; column < modules; column += 1) {
      if (symbol.isDark(row, column)) {
        context.fillRect((column + QUIET_ZONE) * scale, (row + QUIET_ZONE) * scale, scale, scale);
      }
    }
  }
  return { version: (modules - 17) / 4, modules };
}
