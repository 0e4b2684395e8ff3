// `make web`: bundle src/main.js (Leaflet included) into ../api/static/app.js + app.css; the
// video players (mpegts.js for FLV, hls.js for HLS) become chunks loaded only when a relay
// stream is opened. The output directory holds build output only and is emptied first.
import { readdirSync, rmSync } from "node:fs";
import { build } from "esbuild";

const out = "../api/static";
for (const name of readdirSync(out)) rmSync(`${out}/${name}`);

await build({
  entryPoints: { app: "src/main.js" },
  bundle: true,
  format: "esm",
  splitting: true,
  minify: true,
  sourcemap: false,
  target: ["es2020"],
  outdir: out,
  chunkNames: "chunk-[hash]",
  loader: { ".png": "file", ".svg": "file" },
  assetNames: "[name]",
  legalComments: "eof",
  logLevel: "info",
});
