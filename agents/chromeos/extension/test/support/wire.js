// The collector's wire format, from the committed collector/tice_collector/openapi.yaml (generated from
// wire/tice_wire/__init__.py): the extension's requests are validated against it, so the two cannot drift.

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import YAML from "yaml";

export const OPENAPI = fileURLToPath(new URL("../../../../../collector/tice_collector/openapi.yaml", import.meta.url));

const doc = YAML.parse(readFileSync(OPENAPI, "utf8"));
// strict: false lets Ajv skip OpenAPI's own keywords (discriminator); the JSON Schema ones all apply.
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
ajv.addSchema(doc, "openapi.yaml");

export const schemas = doc.components.schemas;
const compiled = new Map();

/** Validate `value` against components/schemas/<name>; returns a list of error sentences (empty = valid). */
export function validate(name, value) {
  if (!compiled.has(name)) compiled.set(name, ajv.getSchema(`openapi.yaml#/components/schemas/${name}`));
  const fn = compiled.get(name);
  if (!fn) throw new Error(`no schema ${name} in ${OPENAPI}`);
  const errors = fn(value) ? [] : fn.errors.map((e) => `${e.instancePath || "$"} ${e.message}`);
  if (name === "Batch" && Array.isArray(value?.records)) {
    value.records.forEach((r, i) => errors.push(...partsRule(r).map((m) => `/records/${i} ${m}`)));
  }
  if (name === "Usage") errors.push(...partsRule(value));
  return errors;
}

/** The collector's plausibility rule: the parts of a usage interval never exceed it. */
export function partsRule(r) {
  if (!r || r.type !== "usage") return [];
  const parts = ["active_s", "idle_s", "locked_s", "no_session_s", "unclassified_s"].reduce((a, k) => a + (r[k] ?? 0), 0);
  return parts > r.duration_s ? [`parts add up to ${parts} s, more than duration_s ${r.duration_s}`] : [];
}
