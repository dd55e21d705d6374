// Import rules of the console (admin_ui/) that the linter cannot express; Biome's noImportCycles covers cycles.
//   - app.js is the entry point: no module imports it.
//   - A page (pages/<name>.js) and its parts (pages/<name>/...) import shared modules and their own parts only,
//     never another page; shared modules (outside pages/) import no page, except app.js's router with import().
//   - Every relative import names a file that exists.
// Usage: node .ci/check-js-imports.mjs [admin_ui]; exits 1 and lists the offending imports when a rule is broken.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";

const root = resolve(process.argv[2] ?? "admin_ui");
const STATIC = /^(?:import|export)\b[^;]*?\bfrom\s*["']([^"']+)["']|^import\s*["']([^"']+)["']/gm;
const DYNAMIC = /\bimport\(\s*["']([^"']+)["']\s*\)/g;

function jsFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return jsFiles(path);
    return e.name.endsWith(".js") ? [path] : [];
  });
}

function importsOf(file) {
  const text = readFileSync(file, "utf8");
  const found = [];
  for (const m of text.matchAll(STATIC)) found.push({ spec: m[1] ?? m[2], dynamic: false });
  for (const m of text.matchAll(DYNAMIC)) found.push({ spec: m[1], dynamic: true });
  return found.filter(({ spec }) => spec.startsWith("."));
}

/** "pages/keys.js" and "pages/keys/table.js" belong to page "keys"; shared modules to no page. */
function pageOf(rel) {
  const parts = rel.split("/");
  if (parts[0] !== "pages" || parts.length < 2) return null;
  return parts[1].replace(/\.js$/, "");
}

/** Why importing target from rel breaks a rule, or null. */
function broken(rel, target, dynamic) {
  const page = pageOf(rel);
  const targetPage = pageOf(target);
  if (target === "app.js") return "app.js is the entry point: move what is shared into a module both import";
  if (page !== null && targetPage !== null && targetPage !== page) return `page "${page}" imports page "${targetPage}"`;
  if (page === null && targetPage !== null && !(rel === "app.js" && dynamic)) {
    return "shared modules import no page (only app.js routes to them, with import())";
  }
  return null;
}

const errors = [];
for (const file of jsFiles(root)) {
  const rel = relative(root, file).split(sep).join("/");
  for (const { spec, dynamic } of importsOf(file)) {
    const path = resolve(dirname(file), spec);
    const why = existsSync(path) ? broken(rel, relative(root, path).split(sep).join("/"), dynamic) : "no such file";
    if (why) errors.push(`${rel}: "${spec}": ${why}`);
  }
}

if (errors.length) {
  console.error(`Import rules broken in ${relative(process.cwd(), root) || "."}:\n  ${errors.join("\n  ")}`);
  process.exit(1);
}
console.log(`Import rules hold in ${relative(process.cwd(), root) || "."}: ${jsFiles(root).length} modules.`);
