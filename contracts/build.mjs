// Compiles the contracts with solc (the npm package, pinned in package-lock.json) into
// contracts/build/<Name>.json: {"abi", "bytecode"}. Run by the install step
// (make install-js); the artifacts are build output, not kept in git.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import solc from 'solc';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, 'build');
const sources = Object.fromEntries(
  readdirSync(here)
    .filter((f) => f.endsWith('.sol'))
    .map((f) => [f, { content: readFileSync(join(here, f), 'utf8') }]),
);
const input = {
  language: 'Solidity',
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: 'cancun',
    outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object'] } },
  },
};
const result = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (result.errors || []).filter((e) => e.severity === 'error');
for (const e of result.errors || []) console.error(e.formattedMessage);
if (errors.length) process.exit(1);
mkdirSync(out, { recursive: true });
for (const file of Object.values(result.contracts)) {
  for (const [name, c] of Object.entries(file)) {
    if (!c.evm.bytecode.object) continue; // interfaces
    writeFileSync(
      join(out, `${name}.json`),
      JSON.stringify({ abi: c.abi, bytecode: `0x${c.evm.bytecode.object}`, compiler: `solc ${solc.version()}` }, null, 1),
    );
  }
}
console.log(`contracts: ${Object.keys(result.contracts).length} sources compiled by solc ${solc.version()}`);
