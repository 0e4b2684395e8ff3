// `make web`: bundle src/main.js (Leaflet included) into ../api/static/app.js + app.css.
import { build } from "esbuild";

await build({
  entryPoints: { app: "src/main.js" },
  bundle: true,
  minify: true,
  sourcemap: false,
  target: ["es2020"],
  outdir: "../api/static",
  loader: { ".png": "file", ".svg": "file" },
  assetNames: "[name]",
  legalComments: "eof",
  logLevel: "info",
});
