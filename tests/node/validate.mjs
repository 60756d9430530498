// SPDX-License-Identifier: Apache-2.0
// Validates Kubernetes objects against Kubernetes' OpenAPI schemas with kubernetes-models (and
// cert-manager's for Certificate and Issuer). Input: a JSON array of objects (a file argument or
// stdin); a List's items are validated one by one. Prints one line per object and exits 1 when
// any object is invalid or of a kind no schema describes.
import { readFileSync } from "node:fs";

const text = readFileSync(process.argv[2] || 0, "utf8");
const docs = JSON.parse(text);
let failed = 0;

async function modelOf(apiVersion, kind) {
  const certManager = apiVersion.startsWith("cert-manager.io/");
  const mod = certManager
    ? await import(`@kubernetes-models/cert-manager/${apiVersion}`)
    : await import(`kubernetes-models/${apiVersion}`);
  return mod[kind];
}

async function check(obj, where) {
  const { apiVersion, kind } = obj || {};
  if (apiVersion === "v1" && kind === "List") {
    for (const [i, item] of (obj.items || []).entries()) {
      await check(item, `${where}.items[${i}]`);
    }
    return;
  }
  let Model;
  try {
    Model = apiVersion && kind ? await modelOf(apiVersion, kind) : undefined;
  } catch (e) {
    Model = undefined;
  }
  if (!Model) {
    console.log(`${where}: no schema for ${apiVersion} ${kind}`);
    failed++;
    return;
  }
  try {
    new Model(obj).validate();
    console.log(`${where}: ${kind} ${obj.metadata?.name ?? ""} valid`);
  } catch (e) {
    console.log(`${where}: ${kind} ${obj.metadata?.name ?? ""} INVALID: ${e.message}`);
    failed++;
  }
}

for (const [i, d] of docs.entries()) {
  await check(d, `document ${i + 1}`);
}
process.exit(failed ? 1 : 0);
